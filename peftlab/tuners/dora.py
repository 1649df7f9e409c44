"""DoRA: weight-decomposed low-rank adaptation (Liu et al. 2024, arXiv:2402.09353).

DoRA splits a weight into a magnitude and a direction, W = m * V / ||V|| (per output unit),
and lets LoRA move only the direction, while a separate vector m (one number per output
unit) rescales it:

    W' = m * (W + s B A) / ||W + s B A||          norms over the input axis, one per output row

At initialisation m = ||W||, so W' = W. The paper (section 4.3) treats the norm
||W + s B A|| as a constant in the backward pass ("detached"): gradients then flow into m
and into B A as if the norm were a fixed number, which saves memory and, they report, costs
no accuracy. We do the same, which is also what `peft` does.

In the forward pass we never build W'. With base = W x and lora = s B A x:

    W' x = scale * (W x + s B A x),  scale = m / ||W + s B A||
    W' x - W x = (scale - 1) * base + scale * lora       <- what the layer adds

These functions work on weights as (out, in) matrices; tuners/lora.py calls them.
"""
import torch


def weight_norm(weight: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """||W + delta||, one norm per output row: (out, in), (out, in) -> (out,)."""
    return torch.linalg.norm(weight + delta, dim=1)


def initial_magnitude(weight: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """m at initialisation: the norms of the adapted weight, so the layer starts unchanged
    (with B = 0 these are the norms of W itself)."""
    return weight_norm(weight, delta).detach()


def dora_delta(magnitude: torch.Tensor, weight: torch.Tensor, delta: torch.Tensor,
               base_out: torch.Tensor, lora_out: torch.Tensor) -> torch.Tensor:
    """What DoRA adds to the base output W x.

    magnitude (out,), weight / delta (out, in), base_out = W x and lora_out = s B A x (..., out).
    """
    with torch.no_grad():                       # the detached norm of section 4.3
        norm = weight_norm(weight, delta)       # (out,)
    scale = magnitude / norm                    # (out,), broadcast over the last axis
    return (scale - 1) * base_out + scale * lora_out


def merged_weight(magnitude: torch.Tensor, weight: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """W' = m * (W + delta) / ||W + delta||, shape (out, in): DoRA folded into one matrix."""
    adapted = weight + delta
    return (magnitude / weight_norm(weight, delta))[:, None] * adapted
