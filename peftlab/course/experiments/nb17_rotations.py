"""Notebook 17's comparison: three methods that rotate or re-express the frozen weight (OFT, HRA, FourierFT)
against LoRA at one parameter budget, by one protocol (experiments/protocol.py), and what each run keeps
of the base model.

pico-llama-1m, sentiment, q_proj and v_proj of every layer, about 7k trained numbers each (LoRA r=4:
7,168; OFT with blocks of 16, exact Cayley: 7,680; HRA with 8 reflections: 8,192, an even r, since an odd
one cannot start as the base model, and 8 rather than 6 (6,144, as far below) so that a smaller budget cannot
explain a shortfall; FourierFT with 896 coefficients a layer, from zero: 7,168),
40 steps of 16 (with a generous budget every method reaches 1.000), each method's learning rate picked
on 200 validation reviews from a 3-value grid (grown past an edge if it wins there), 5 seeds, accuracy
on 500 test reviews. Every run also records what the model still knows (the capitals it ranks first,
the perplexity of 300 held-out corpus texts, notebook 03's measures) and what the merged adapter did to
the adapted weights' geometry (the largest change of a singular value, relative to the largest, and of
a cosine between two rows, over the 8 adapted layers).

    python -m peftlab.course.experiments.nb17_rotations          # writes results/nb17_rotations.json
"""
from functools import cache

import torch
import torch.nn.functional as F

from peftlab.tuners import FourierFTConfig, HRAConfig, LoraConfig, OFTConfig
from peftlab.tuners.layer import BaseTunerLayer
from peftlab.workbook import evaluate
from peftlab.workbook.data import load_corpus
from peftlab.workbook.zoo import load_base_model

from .protocol import Method, compare, run_and_save

SETTINGS = dict(base_name="pico-llama-1m", task_name="sentiment", steps=40, batch_size=16, seeds=(0, 1, 2, 3, 4))
TARGETS = ["q_proj", "v_proj"]
N_HELDOUT = 300


def lora():
    return LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS)


def oft():
    return OFTConfig(oft_block_size=16, r=0, use_cayley_neumann=False, target_modules=TARGETS)


def hra():
    return HRAConfig(r=8, target_modules=TARGETS)


def fourierft():
    return FourierFTConfig(n_frequency=896, init_weights=True, target_modules=TARGETS)


# --- what a merged adapter does to W --------------------------------------------------------------

def merged_weights(model, adapter: str = "default") -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{layer name: (W, W with the adapter merged)}, both (out, in) in float64, for every layer the adapter
    wraps; computed from the layer's merge rule, so the model is left as it was."""
    pairs = {}
    with torch.no_grad():
        for name, layer in model.named_modules():
            if isinstance(layer, BaseTunerLayer) and adapter in layer:
                weight = layer.get_base_weight()
                merged, _ = layer.merge_weights(adapter, weight, layer.get_base_bias())
                pairs[name] = (weight.double(), merged.double())
    return pairs


def row_cosines(weight: torch.Tensor) -> torch.Tensor:
    """(out, out): the cosine of the angle between every two rows (neurons) of W."""
    unit = F.normalize(weight, dim=1)
    return unit @ unit.T


def geometry_change(model) -> dict[str, float]:
    """Over the adapted layers: the largest change of a singular value of W (relative to W's largest) and
    of the cosine between two of its rows. A rotation of the rows changes neither."""
    spectrum, angles = 0.0, 0.0
    for weight, merged in merged_weights(model).values():
        before, after = torch.linalg.svdvals(weight), torch.linalg.svdvals(merged)
        spectrum = max(spectrum, ((after - before).abs().max() / before.max()).item())
        angles = max(angles, (row_cosines(merged) - row_cosines(weight)).abs().max().item())
    return {"spectrum change": float(f"{spectrum:.3g}"), "angle change": float(f"{angles:.3g}")}


@cache
def heldout_texts() -> tuple[str, ...]:
    return tuple(load_corpus()["heldout"]["text"])[:N_HELDOUT]


@cache
def tokenizer():
    return load_base_model(SETTINGS["base_name"])[1]


def knowledge(model, tokenizer, texts) -> dict[str, float]:
    """What the model still knows of its pretraining (notebook 03's measures)."""
    return {"ranked recall": round(evaluate.fact_recall_by_rank(model, tokenizer), 4),
            "perplexity": round(evaluate.perplexity(model, tokenizer, texts), 4)}


def measure(model) -> dict[str, float]:
    """Protocol's per-run measure: knowledge kept and the merged weights' geometry."""
    return {**knowledge(model, tokenizer(), heldout_texts()), **geometry_change(model)}


METHODS = {
    "LoRA r=4": Method(lora, (3e-3, 1e-2, 3e-2), measure=measure),
    "OFT b=16": Method(oft, (3e-3, 1e-2, 3e-2), measure=measure),
    "HRA r=8": Method(hra, (1e-2, 3e-2, 1e-1), measure=measure),
    "FourierFT n=896": Method(fourierft, (3e-3, 1e-2, 3e-2), measure=measure),
}


def run() -> dict:
    results = compare(METHODS, **SETTINGS)
    base = load_base_model(SETTINGS["base_name"])[0]
    return {**results, "settings": {**results["settings"], "n_heldout": N_HELDOUT},
            "base": knowledge(base, tokenizer(), heldout_texts())}


def main() -> None:
    # One thread: the notebook re-runs seed 0 on one thread too, and then gets the stored numbers exactly.
    run_and_save("nb17_rotations", run, threads=1)


if __name__ == "__main__":
    main()
