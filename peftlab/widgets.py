"""Interactive explorers for the notebooks (ipywidgets). Each returns the widget to display."""
import ipywidgets as widgets
import torch
from IPython.display import display

from .memory import PRECISIONS, human_bytes, memory_breakdown


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


def show(widget) -> None:
    display(widget)
