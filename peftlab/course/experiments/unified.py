"""Notebook 12's comparison, the unified view: every method of the library and full fine-tuning by one
protocol (experiments/protocol.py), and for each what it costs besides its score.

pico-llama-1m, sentiment, 40 steps of 16 examples (nb05 showed this budget separates methods; with a
generous one every method reaches 1.000), each method's learning rate picked from a 3-value grid on
200 validation reviews, 3 seeds, accuracy on 500 test reviews. BitFit needs bias terms, which the
Llama-style model lacks, so it runs on pico-gpt2-1m under the same protocol, with full fine-tuning and
LoRA on that base beside it for scale: its score compares with those two, not with the Llama rows.
(pico-gpt2-1m for the whole sweep would need nb07's 300 steps: at 40 steps even full fine-tuning there
stays near 0.6 and most methods near chance, and 300 steps for every method is 7x the time.)

Per method:
- every seed, at the chosen rate: test accuracy, and forgetting (`Method.measure`): fact recall by
  rank and greedy, perplexity on the first 300 held-out corpus texts; the base models' own values
  once, under "base_reference".
- the seed-0 run at the chosen rate, once more, watched: median seconds per optimizer step (timed
  in an `observe` callback: indicative only, the machine is shared), adapter file size, inference
  latency of one batch of 16 test prompts (median of 10) unmerged and, where the method can merge,
  after merge_and_unload.
- one training step of a fresh model on one batch: the memory it holds, measured (weights and
  buffers, gradients, AdamW's state) plus the activations autograd saves for the backward pass.

    python -m peftlab.course.experiments.unified          # writes results/unified.json
"""
import copy
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers

from peftlab.model import get_peft_model
from peftlab.nf4 import quantize_model
from peftlab.tuners import (
    BitFitConfig,
    BottleneckConfig,
    IA3Config,
    LNTuningConfig,
    LoHaConfig,
    LoKrConfig,
    LoraConfig,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptTuningConfig,
    VeraConfig,
)
from peftlab.workbook.batching import PromptTargetCollator
from peftlab.workbook.data import load_corpus, load_task
from peftlab.workbook.evaluate import fact_recall, fact_recall_by_rank, perplexity
from peftlab.workbook.memory import measured_bytes, stored_bytes
from peftlab.workbook.training import trainable_parameters
from peftlab.workbook.zoo import load_base_model

from . import nb06_adalora
from .protocol import Method, compare, run_and_save, run_method

SETTINGS = dict(task_name="sentiment", steps=40, batch_size=16, seeds=(0, 1, 2))
N_HELDOUT, LATENCY_BATCH, LATENCY_REPEATS = 300, 16, 10
QV = ["q_proj", "v_proj"]


def lora(r: int, targets=QV, **options):
    return lambda: LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets, **options)


# Grids: nb05's for the LoRA family, nb06's for AdaLoRA, nb11's rates for QLoRA at LoRA r=2's grid (same rank
# as the LoRA row, so the two rows differ only by the 4-bit base), nb07's for the adapters (moved up a step
# where nb07 chose its top rate, as fewer steps want larger rates), notebooks 08-10's for the soft prompts.
# A first full pass (2026-11-27) chose the edge of the grid for (IA)³, Houlsby, parallel adapter, prompt
# tuning, P-tuning, prefix tuning and full fine-tuning on gpt2; those grids moved one step that way.
LLAMA_METHODS = {
    "full fine-tuning": Method(None, (3e-4, 1e-3, 3e-3)),
    "LoRA r=2": Method(lora(2), (1e-2, 3e-2, 1e-1)),
    "DoRA r=2": Method(lora(2, use_dora=True), (1e-2, 3e-2, 1e-1)),
    "VeRA r=352": Method(lambda: VeraConfig(r=352, target_modules=QV), (3e-2, 1e-1, 3e-1)),
    "LoHa r=1": Method(lambda: LoHaConfig(r=1, alpha=2, target_modules=QV), (1e-2, 3e-2, 1e-1)),
    "LoKr r=8, factor 4": Method(lambda: LoKrConfig(r=8, alpha=16, decompose_factor=4, target_modules=QV),
                                 (1e-2, 3e-2, 1e-1)),
    "AdaLoRA 6 -> 2, all linear": Method(lambda: nb06_adalora.adalora(steps=SETTINGS["steps"]),
                                         nb06_adalora.ADALORA_LRS, on_step=nb06_adalora.allocate),
    "QLoRA r=2 (NF4 + double quant.)": Method(lora(2), (1e-2, 3e-2, 1e-1), prepare_base=quantize_model),
    "(IA)³": Method(lambda: IA3Config(), (3e-2, 1e-1, 3e-1)),
    "Houlsby adapters": Method(lambda: BottleneckConfig(mh_adapter=True, reduction_factor=16), (3e-3, 1e-2, 3e-2)),
    "Pfeiffer adapter": Method(lambda: BottleneckConfig(reduction_factor=16), (1e-2, 3e-2, 1e-1)),
    "parallel adapter": Method(lambda: BottleneckConfig(is_parallel=True, reduction_factor=16, scaling=4.0),
                               (1e-3, 3e-3, 1e-2)),
    "LayerNorm tuning": Method(lambda: LNTuningConfig(), (3e-2, 1e-1, 3e-1)),
    "prompt tuning P=8": Method(lambda: PromptTuningConfig(num_virtual_tokens=8), (3e-2, 1e-1, 3e-1)),
    "P-tuning P=8 (MLP)": Method(lambda: PromptEncoderConfig(num_virtual_tokens=8), (1e-3, 3e-3, 1e-2)),
    "prefix tuning P=8": Method(lambda: PrefixTuningConfig(num_virtual_tokens=8), (3e-2, 1e-1, 3e-1)),
}
GPT2_METHODS = {
    "BitFit (pico-gpt2-1m)": Method(lambda: BitFitConfig(), (1e-1, 3e-1, 1.0)),
    "full fine-tuning (pico-gpt2-1m)": Method(None, (1e-4, 3e-4, 1e-3)),
    "LoRA r=8 (pico-gpt2-1m)": Method(lora(8, ["c_attn"]), (3e-3, 1e-2, 3e-2)),
}
BASES = {"pico-llama-1m": LLAMA_METHODS, "pico-gpt2-1m": GPT2_METHODS}
METHODS = {**LLAMA_METHODS, **GPT2_METHODS}   # the table, in the order of the stored rows
PROFILE_FIELDS = ("step_seconds", "memory", "saved_bytes", "weights_file_bytes", "latency_unmerged",
                  "latency_merged", "merges")
FORGETTING_FIELDS = ("fact_recall_by_rank", "fact_recall", "heldout_perplexity")


# What notebook 12 plots, per method: axis name -> (how to read it from a stored row, log scale?).
AXES = {
    "test accuracy": (lambda row: row["test_mean"], False),
    "trainable parameters": (lambda row: row["trainable"], True),
    "training memory (MiB)": (lambda row: row["memory"]["total"] / 2**20, False),
    "step time (ms)": (lambda row: row["step_seconds"] * 1000, False),
    "adapter file (KiB)": (lambda row: row["saved_bytes"] / 1024, True),
    "fact recall by ranking": (lambda row: statistics.mean(row["fact_recall_by_rank"]), False),
    "held-out perplexity": (lambda row: statistics.mean(row["heldout_perplexity"]), True),
    "latency unmerged (ms)": (lambda row: row["latency_unmerged"] * 1000, False),
}


def summarize(results: dict) -> dict[str, dict[str, float]]:
    """Stored results as method -> {axis: value} for every axis of AXES (seed means where per seed)."""
    return {name: {axis: read(row) for axis, (read, _) in AXES.items()} for name, row in results["rows"].items()}


def forgetting(base_name: str):
    """A `measure` for Method: what the trained model still knows of its pretraining."""
    _, tokenizer = load_base_model(base_name)
    texts = list(load_corpus()["heldout"]["text"][:N_HELDOUT])

    def measure(model) -> dict:
        with torch.no_grad():
            return {"fact_recall_by_rank": round(fact_recall_by_rank(model, tokenizer), 4),
                    "fact_recall": round(fact_recall(model, tokenizer), 4),
                    "heldout_perplexity": round(perplexity(model, tokenizer, texts), 3)}
    return measure


def with_measure(methods: dict[str, Method], measure) -> dict[str, Method]:
    return {name: dataclasses.replace(method, measure=measure) for name, method in methods.items()}


def build_model(method: Method, base_name: str, seed: int = 0):
    """(model, tokenizer) ready to train, as run_method builds it."""
    base, tokenizer = load_base_model(base_name)
    if method.prepare_base is not None:
        method.prepare_base(base)
    torch.manual_seed(seed)
    return (copy.deepcopy(base) if method.config is None else get_peft_model(base, method.config())), tokenizer


def step_timer(stamps: list[float]):
    """An `observe` for run_method: the time of every optimizer step's end, appended to `stamps`."""
    def observe(model):
        return lambda step: stamps.append(time.perf_counter())
    return observe


def median_step_seconds(stamps: list[float]) -> float:
    """Median time between consecutive step ends (the first step, which warms up, has no interval)."""
    return statistics.median(b - a for a, b in zip(stamps, stamps[1:]))


def saved_sizes(model) -> dict[str, int]:
    """Bytes save_pretrained writes: every file, and the weights file(s) alone."""
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        files = [f for f in Path(folder).rglob("*") if f.is_file()]
        return {"saved_bytes": sum(f.stat().st_size for f in files),
                "weights_file_bytes": sum(f.stat().st_size for f in files if f.suffix == ".safetensors")}


@torch.no_grad()
def batch_latency(model, batch: dict, repeats: int = LATENCY_REPEATS) -> float:
    """Median seconds of one forward pass over `batch`, after one untimed warm-up pass."""
    model.eval()
    model(**batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(**batch)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def merged_latency(model, batch: dict) -> dict:
    """Latency after merge_and_unload, and how far the merged logits are from the unmerged ones; or
    why the model cannot merge (full fine-tuning: nothing to merge)."""
    if not hasattr(model, "merge_and_unload"):
        return {"merges": False, "latency_merged": None, "merge_note": "nothing to merge (plain model)"}
    with torch.no_grad():
        before = model(**batch).logits
    try:
        merged = model.merge_and_unload()
    except Exception as error:   # a method that cannot merge says so by raising
        return {"merges": False, "latency_merged": None, "merge_note": f"{type(error).__name__}: {error}"[:200]}
    with torch.no_grad():
        difference = (merged(**batch).logits - before).abs().max().item()
    return {"merges": True, "latency_merged": round(batch_latency(merged, batch), 6),
            "merge_max_abs_logit_diff": difference}


def saved_activation_bytes(model, batch: dict) -> tuple[torch.Tensor, int]:
    """The loss of one forward pass and the bytes of the tensors autograd saved for its backward
    (storages counted once; parameters and buffers are not activations)."""
    held = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    storages = {}

    def pack(t):
        pointer = t.untyped_storage().data_ptr()
        if pointer not in held:
            storages[pointer] = t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(**batch).loss
    return loss, sum(storages.values())


def training_memory(method: Method, base_name: str, task_name: str, batch_size: int) -> dict[str, int]:
    """Bytes one training step holds at its peak, measured on a fresh model: weights and buffers,
    gradients, AdamW's moments (what train() uses) and the activations saved for backward."""
    model, tokenizer = build_model(method, base_name)
    batch = PromptTargetCollator(tokenizer)([load_task(task_name)["train"][i] for i in range(batch_size)])
    model.train()
    optimizer = torch.optim.AdamW(trainable_parameters(model), lr=1e-3)
    loss, activations = saved_activation_bytes(model, batch)
    loss.backward()
    optimizer.step()
    held = measured_bytes(model, optimizer)
    parts = {"weights and buffers": stored_bytes(model), "gradients": held["gradients"],
             "Adam moments": held["Adam moments"], "activations": activations}
    return parts | {"total": sum(parts.values())}


def profile(method: Method, lr: float, *, base_name: str, task_name: str, steps: int, batch_size: int) -> dict:
    """The seed-0 run at `lr` again, timed; its saved size and inference latency; and the memory of a step."""
    stamps: list[float] = []
    run = run_method(method, lr, 0, base_name=base_name, task_name=task_name, steps=steps, batch_size=batch_size,
                     eval_rows={}, keep_model=True, observe=step_timer(stamps))
    model, tokenizer = run["model"], load_base_model(base_name)[1]
    prompts = [row["prompt"] for row in list(load_task(task_name)["test"])[:LATENCY_BATCH]]
    encoded = tokenizer(prompts, return_tensors="pt", padding=True)
    batch = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
    found = {"step_seconds": round(median_step_seconds(stamps), 5), **saved_sizes(model),
             "latency_unmerged": round(batch_latency(model, batch), 6)}
    found.update(merged_latency(model, batch))
    found["memory"] = training_memory(method, base_name, task_name, batch_size)
    return found


def base_reference(base_name: str) -> dict:
    """Forgetting measures of the untrained base model."""
    return forgetting(base_name)(load_base_model(base_name)[0])


def run_base(base_name: str, methods: dict[str, Method]) -> dict:
    """The protocol on one base model, then each method's chosen-rate profile."""
    results = compare(with_measure(methods, forgetting(base_name)), base_name=base_name, **SETTINGS)
    for name, row in results["rows"].items():
        row["base_model"] = base_name
        row.update(profile(methods[name], row["lr"], base_name=base_name,
                           **{k: v for k, v in SETTINGS.items() if k != "seeds"}))
        print(f"{name:>32}: {row['step_seconds'] * 1000:.1f} ms/step, {row['memory']['total'] / 2**20:.2f} MiB, "
              f"{row['saved_bytes']:,} B saved, latency {row['latency_unmerged'] * 1000:.1f} ms unmerged, "
              f"merged {row['latency_merged'] and row['latency_merged'] * 1000}", flush=True)
    return results


def run() -> dict:
    results = {"settings": {**SETTINGS, "seeds": list(SETTINGS["seeds"]), "base_models": list(BASES),
                            "n_heldout": N_HELDOUT, "latency_batch": LATENCY_BATCH,
                            "latency_repeats": LATENCY_REPEATS,
                            "timings": "indicative only: measured on a machine shared with other work"},
               "rows": {}, "base_reference": {}}
    for base_name, methods in BASES.items():
        results["base_reference"][base_name] = base_reference(base_name)
        found = run_base(base_name, methods)
        results["settings"].update(n_validation=found["settings"]["n_validation"], n_test=found["settings"]["n_test"])
        results["rows"].update(found["rows"])
    return results


def main(threads: int = 1) -> None:
    # One thread: on this shared 2-core machine two threads ran a step 5-10x slower than one (contention).
    transformers.utils.logging.disable_progress_bar()   # no loading bars in the log
    run_and_save("unified", run, threads)


if __name__ == "__main__":
    main()
