"""Interactive explorers for the notebooks (ipywidgets). Each returns the widget to display."""
import ipywidgets as widgets
import torch
from IPython.display import display

from peftlab.workbook.fsdp_memory import fewest_fsdp_gpus, fsdp_memory
from peftlab.workbook.memory import (
    LLAMA2_SHAPES,
    LLAMA_SHAPES,
    PRECISIONS,
    data_parallel_memory,
    fewest_gpus,
    finetuning_memory,
    human_bytes,
    memory_breakdown,
)


def generate_text(model, tokenizer, prompt: str, max_new_tokens: int = 20,
                  temperature: float = 0.0, seed: int = 0) -> str:
    """Continue `prompt`. Temperature 0 is greedy decoding; above 0, sampling (seeded)."""
    inputs = tokenizer(prompt, return_tensors="pt").to(next(model.parameters()).device)
    torch.manual_seed(seed)
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0} if temperature > 0 else {"do_sample": False}
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id, **sampling)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def generation_playground(model, tokenizer, prompt: str = "The capital of France is") -> widgets.VBox:
    """A prompt box, a temperature slider and a Generate button."""
    text = widgets.Text(value=prompt, description="prompt", layout=widgets.Layout(width="90%"))
    temperature = widgets.FloatSlider(value=0.0, min=0.0, max=2.0, step=0.1, description="temperature")
    length = widgets.IntSlider(value=12, min=1, max=40, description="new tokens")
    button = widgets.Button(description="Generate", button_style="primary")
    output = widgets.Output()

    def on_click(_=None):
        with output:
            output.clear_output()
            completion = generate_text(model, tokenizer, text.value, length.value, temperature.value)
            print(f"{text.value} \u2192 {completion}")

    button.on_click(on_click)
    on_click()  # show one generation straight away
    return widgets.VBox([text, widgets.HBox([temperature, length]), button, output])


MODEL_SIZES = {"125M": 125e6, "1B": 1e9, "7B": 7e9, "70B": 70e9}


def memory_calculator() -> widgets.VBox:
    """Memory of fine-tuning a model of a real size with Adam: full vs a trainable fraction."""
    size = widgets.ToggleButtons(options=list(MODEL_SIZES), value="7B", description="model")
    precision = widgets.ToggleButtons(options=list(PRECISIONS), value="mixed", description="precision")
    percent = widgets.FloatLogSlider(value=100, base=10, min=-2, max=2, step=0.1,
                                     description="% trainable", readout_format=".2f")
    output = widgets.Output()

    def update(_=None):
        total = int(MODEL_SIZES[size.value])
        parts = memory_breakdown(total, int(total * percent.value / 100), precision.value)
        with output:
            output.clear_output()
            for name, value in parts.items():
                print(f"{name:>15}: {human_bytes(value):>10}")

    for w in (size, precision, percent):
        w.observe(update, names="value")
    update()
    return widgets.VBox([size, precision, percent, output])


GPU_MEMORY = {"24 GB": 24 * 2**30, "48 GB": 48 * 2**30, "80 GB": 80 * 2**30}   # a GPU's "GB" are GiB


def qlora_memory_calculator() -> widgets.VBox:
    """Memory of fine-tuning LLaMA 7B-65B (full, LoRA or QLoRA) on a batch, against the size of real GPUs."""
    size = widgets.ToggleButtons(options=list(LLAMA_SHAPES), value="65B", description="LLaMA")
    method = widgets.ToggleButtons(options=["full", "LoRA", "QLoRA"], value="QLoRA", description="method")
    rank = widgets.SelectionSlider(options=[8, 16, 32, 64, 128], value=64, description="LoRA rank")
    batch = widgets.SelectionSlider(options=[1, 2, 4, 8, 16, 32], value=1, description="batch")
    seq = widgets.SelectionSlider(options=[256, 512, 1024, 2048, 4096], value=512, description="sequence")
    checkpointing = widgets.Checkbox(value=True, description="gradient checkpointing")
    output = widgets.Output()

    def update(_=None):
        parts = finetuning_memory(size.value, method.value, rank.value, batch.value, seq.value, checkpointing.value)
        with output:
            output.clear_output(wait=True)
            import matplotlib.pyplot as plt
            fig, ax = plt.subplots(figsize=(7, 2.2))
            left = 0
            for name, value in parts.items():
                if name != "total" and value:
                    ax.barh([0], [value / 2**30], left=left, label=name)
                    left += value / 2**30
            for label, limit in GPU_MEMORY.items():
                ax.axvline(limit / 2**30, color="#777777", linestyle="--", lw=0.8)
                ax.text(limit / 2**30, 0.45, label, fontsize=8, ha="center")
            ax.set_xlim(0, max(100, 1.05 * parts["total"] / 2**30))
            ax.set_yticks([])
            ax.set_xlabel("GiB")
            ax.set_title(f"LLaMA-{size.value}, {method.value}: {parts['total'] / 2**30:,.1f} GiB", pad=14)
            ax.legend(fontsize=7, loc="lower right")
            plt.show()

    controls = (size, method, rank, batch, seq, checkpointing)
    for w in controls:
        w.observe(update, names="value")
    update()
    return widgets.VBox([*controls, output])


def zero_memory_planner() -> widgets.VBox:
    """Memory on each GPU of fine-tuning Llama 2 7B, 13B or 70B (full, LoRA, QLoRA; batch 1 x 512, gradient
    checkpointing) data-parallel on 1 to 64 GPUs, with ZeRO stages 0 to 3 and with FSDP (ZeRO-3 plus the
    units it gathers: workbook/fsdp_memory.py), against a GPU's memory."""
    import matplotlib.pyplot as plt

    size = widgets.ToggleButtons(options=list(LLAMA2_SHAPES), value="13B", description="Llama 2")
    method = widgets.ToggleButtons(options=["full", "LoRA", "QLoRA"], value="full", description="method")
    gpus = widgets.SelectionSlider(options=[1, 2, 4, 8, 16, 32, 64], value=4, description="GPUs")
    memory = widgets.ToggleButtons(options=list(GPU_MEMORY), value="80 GB", description="each GPU")
    output = widgets.Output()
    names = ["DDP (ZeRO-0)", "ZeRO-1", "ZeRO-2", "ZeRO-3", "FSDP"]

    def update(_=None):
        limit = GPU_MEMORY[memory.value]
        bills = [data_parallel_memory(size.value, method.value, gpus.value, stage) for stage in range(4)]
        bills.append(fsdp_memory(size.value, method.value, gpus.value))
        fits = [stage for stage, bill in enumerate(bills[:4]) if bill["total"] <= limit]
        verdict = f"fits from ZeRO-{fits[0]} on" if fits else f"does not fit in {memory.value}"
        with output:
            output.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(7, 3.2))
            bottom = [0.0] * len(bills)
            for part in [p for p in bills[-1] if p != "total"]:
                heights = [bill.get(part, 0) / 2**30 for bill in bills]
                ax.bar(names, heights, bottom=bottom, label=part)
                bottom = [b + h for b, h in zip(bottom, heights)]
            ax.axhline(limit / 2**30, color="#777777", linestyle="--", lw=0.8, label=f"one {memory.value} GPU")
            ax.set_ylabel("GiB on each GPU")
            ax.set_title(f"Llama 2 {size.value}, {method.value}, {gpus.value} GPU(s): {verdict}")
            ax.legend(fontsize=7, loc="upper right")
            plt.show()
            fewest = [fewest_gpus(size.value, method.value, limit, stage) for stage in range(4)]
            fewest.append(fewest_fsdp_gpus(size.value, method.value, limit))
            print(f"fewest {memory.value} GPUs: " + ", ".join(
                f"{name} {n if n else 'over 64'}" for name, n in zip(names, fewest)))

    controls = (size, method, gpus, memory)
    for w in controls:
        w.observe(update, names="value")
    update()
    return widgets.VBox([*controls, output])


def show(widget) -> None:
    display(widget)


# --- 04 inside LoRA -------------------------------------------------------------------------

def lora_scales(r: int, lora_alpha: float) -> dict[str, float]:
    """The factor s in W + s B A: alpha / r (LoRA) and alpha / sqrt(r) (rsLoRA)."""
    return {"alpha/r": lora_alpha / r, "alpha/sqrt(r)": lora_alpha / r ** 0.5}


def lora_rank_explorer(spectra: dict[int, "torch.Tensor"], accuracies: dict[int, float] | None = None,
                       params: dict[int, int] | None = None, lora_alpha: float = 16) -> widgets.VBox:
    """Sliders for rank and lora_alpha. Left: the scale s of both rules against r, the chosen
    (r, alpha) marked. Right: the singular values of an update that a run of rank r learned
    (`spectra`, precomputed, e.g. one adapted matrix per rank) and how much energy the top
    directions hold. Below: the numbers, with trainable parameters and accuracy when given."""
    import matplotlib.pyplot as plt
    import numpy as np

    ranks = sorted(spectra)
    rank = widgets.SelectionSlider(options=ranks, value=ranks[len(ranks) // 2], description="rank r")
    alpha = widgets.FloatLogSlider(value=lora_alpha, base=2, min=0, max=7, step=0.5,
                                   description="lora_alpha", readout_format=".3g")
    output = widgets.Output()

    def update(_=None):
        r, a = rank.value, alpha.value
        values = np.asarray(spectra[r], dtype=float)
        energy = np.cumsum(values ** 2) / max(np.sum(values ** 2), 1e-30)
        k90 = int(np.searchsorted(energy, 0.9 - 1e-12)) + 1
        with output:
            output.clear_output(wait=True)
            fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
            grid = np.arange(1, max(ranks) + 1)
            left.plot(grid, a / grid, label="α / r (LoRA)")
            left.plot(grid, a / np.sqrt(grid), label="α / √r (rsLoRA)")
            left.plot([r, r], list(lora_scales(r, a).values()), "ko", label=f"r = {r}")
            left.set_xscale("log", base=2)
            left.set_yscale("log")
            left.set_xticks(ranks, [str(k) for k in ranks])
            left.set_xlabel("rank r")
            left.set_ylabel("scale s (multiplies B A)")
            left.set_title(f"Scale of the update, lora_alpha = {a:.3g}")
            left.legend()
            index = np.arange(1, len(values) + 1)
            right.bar(index, values / values[0] if values[0] > 0 else values, label="σ_i / σ_1")
            right.plot(index, energy, "o-", color="tab:orange", label="energy in top i")
            right.set_xlabel("index i of the singular value")
            right.set_ylabel("fraction")
            right.set_title(f"Learned update at r = {r}: 90% of energy in {k90} direction(s)")
            right.legend(loc="center right")
            fig.tight_layout()
            plt.show()
            scales = lora_scales(r, a)
            line = (f"r = {r}, lora_alpha = {a:.3g}: s = alpha/r = {scales['alpha/r']:.3f}, "
                    f"rsLoRA s = alpha/sqrt(r) = {scales['alpha/sqrt(r)']:.3f}")
            if params and r in params:
                line += f"; {params[r]:,} trainable parameters"
            if accuracies and r in accuracies:
                line += f"; accuracy {accuracies[r]:.3f}"
            print(line)

    rank.observe(update, names="value")
    alpha.observe(update, names="value")
    update()
    return widgets.VBox([widgets.HBox([rank, alpha]), output])
