"""Magnitude and direction of a weight, before and after fine-tuning: the analysis of the DoRA
paper (Liu et al. 2024, "DoRA: Weight-Decomposed Low-Rank Adaptation", arXiv:2402.09353, §3.2,
"Weight Decomposition Analysis").

Write each output unit's weight row as a length times a direction, W_n = m_n · V_n / ||V_n||. How
far did fine-tuning move them? Over the k output units of a layer,

    ΔM = (1/k) Σ_n | ||W_n|| − ||W0_n|| |            the mean change of length
    ΔD = (1/k) Σ_n (1 − cos(W_n, W0_n))              the mean change of direction

The paper plots ΔM against ΔD for one matrix type over layers and checkpoints and finds that full
fine-tuning moves them in opposite senses (a negative slope: big changes of direction come with
small changes of length, or the reverse), while LoRA moves them together (a positive slope); DoRA
behaves like full fine-tuning.

`effective_weight` reads the weight a layer applies, whatever adapter it wears (LoRA, DoRA
before or after merging, a plain nn.Linear or GPT-2's Conv1D), by feeding it the identity: so the
same code measures full fine-tuning and every method without knowing how they store their update.
"""
import statistics

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def effective_weight(layer: nn.Module, in_features: int | None = None) -> torch.Tensor:
    """The (out, in) matrix W with layer(x) = W x + b, read from the layer's outputs on the identity
    (layer(I) − layer(0): the bias cancels). Dropout is switched off while reading. `in_features`
    is needed only when the layer does not say it (no in_features / weight attribute)."""
    if in_features is None:
        base = getattr(layer, "base_layer", layer)
        in_features = getattr(base, "in_features", None) or base.weight.shape[0]   # Conv1D: (in, out)
    param = next(layer.parameters())
    eye = torch.eye(in_features, dtype=param.dtype, device=param.device)
    was_training = layer.training
    layer.eval()
    try:
        weight = (layer(eye) - layer(torch.zeros_like(eye[:1]))).T
    finally:
        layer.train(was_training)
    return weight.clone()


def magnitude_direction_change(before: torch.Tensor, after: torch.Tensor) -> tuple[float, float]:
    """(ΔM, ΔD) between two (out, in) weights: mean |change of row norm| and mean (1 − cosine) over
    the output rows (the module docstring's formulas)."""
    if before.shape != after.shape:
        raise ValueError(f"The weights differ in shape: {tuple(before.shape)} and {tuple(after.shape)}; "
                         "compare a layer with itself before and after training.")
    before, after = before.double(), after.double()
    delta_m = (after.norm(dim=1) - before.norm(dim=1)).abs().mean()
    delta_d = (1 - F.cosine_similarity(after, before, dim=1)).clamp_min(0).mean()   # rounding can dip below 0
    return float(delta_m), float(delta_d)


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares slope of ys on xs and their Pearson correlation."""
    if len(xs) != len(ys) or len(xs) < 3:
        raise ValueError(f"Need at least 3 paired points, got {len(xs)} xs and {len(ys)} ys.")
    slope = statistics.linear_regression(xs, ys).slope
    return slope, statistics.correlation(xs, ys)
