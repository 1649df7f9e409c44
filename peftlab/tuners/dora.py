"""DoRA: weight-decomposed low-rank adaptation (Liu et al. 2024, arXiv:2402.09353), a LoRA variant.

DoRA splits a weight into a magnitude and a direction, W = m * V / ||V|| (per output unit),
and lets LoRA move only the direction, while a separate vector m (one number per output
unit) rescales it:

    W' = m * (W + s B A) / ||W + s B A||          norms over the input axis, one per output row

At initialisation m = ||W||, so W' = W. The paper (section 4.3) treats the norm
||W + s B A|| as a constant in the backward pass ("detached"): gradients then flow into m
and into B A as if the norm were a fixed number, which saves memory and, they report, costs
no accuracy. We do the same, which is also what `peft` does.

In the forward pass we never build W'. With scale = m / ||W + s B A|| (one number per output):

    W' x + b = scale * (W x + s B A x) + b

and W x is the frozen layer's output minus its bias, so DoRA costs LoRA's B (A x), one
multiply-add and one rescaling. (With dropout in training the adapter reads dropout(x), not x,
so W dropout(x) is computed separately, as peft does.)

A variant (peft's design) is an object with its own init, forward and merge, so that LoRA's
own code has no DoRA branches: LoraLayer keeps `lora_variant[name] = DoraVariant` for a DoRA
adapter and hands it those three steps.

On a convolution W is the kernel read as an (out, in*k*k) matrix (tuners/conv.py), so "one norm
per output row" is one norm per output channel, as in peft; m is stored in the shape peft saves,
(1, out, 1, 1) for nn.Conv2d, and read as (out,) here.
"""
import torch


def weight_norm(weight: torch.Tensor, A: torch.Tensor, B: torch.Tensor, scaling: float) -> torch.Tensor:
    """||W + s B A||, one norm per output row: (out, in), (r, in), (out, r) -> (out,).

    Computed without forming any (out, in) matrix. Row i of W + s B A is w_i + s b_i A, and

        ||w_i + s b_i A||^2 = ||w_i||^2 + 2 s b_i . (A w_i) + s^2 b_i (A A^T) b_i^T

    which needs only W A^T (out, r) and A A^T (r, r). The direct way allocates s B A and
    W + s B A, two (out, in) matrices per adapted layer per step, the largest short-lived
    tensors of a DoRA step. (The expansion loses precision only if ||W + s B A|| were tiny
    next to ||W||, which a trained layer never is.)
    """
    # 2 s A w_i + s^2 (A A^T) b_i for every row at once: (out, r), one fused multiply-add.
    inner = torch.addmm(weight @ A.T, B, A @ A.T, beta=2 * scaling, alpha=scaling ** 2)
    squared = torch.linalg.vector_norm(weight, dim=1).square() + torch.linalg.vecdot(B, inner)   # (out,)
    return squared.clamp_min(0).sqrt()


class DoraVariant:
    """DoRA's init, forward and merge for one adapter of a LoraLayer (see the module docstring)."""

    @staticmethod
    def norm(layer, name: str) -> torch.Tensor:
        """The detached ||W + s B A|| of adapter `name` of `layer`, (out,)."""
        with torch.no_grad():
            return weight_norm(layer.get_base_weight(), layer.A(name), layer.B(name), layer.scaling[name])

    @staticmethod
    def magnitude(layer, name: str) -> torch.Tensor:
        """m of adapter `name`, (out,), whatever shape the layer stores it in."""
        return layer.lora_magnitude_vector[name].reshape(-1)

    @staticmethod
    def init(layer, name: str) -> None:
        """m = the norms of the adapted weight, so the layer starts unchanged (with B = 0 these
        are the norms of W itself)."""
        norm = DoraVariant.norm(layer, name)
        layer.lora_magnitude_vector[name] = torch.nn.Parameter(norm.reshape(layer.magnitude_shape(len(norm))))

    @staticmethod
    def forward(layer, name: str, x_in: torch.Tensor, result: torch.Tensor, lora: torch.Tensor) -> torch.Tensor:
        """The layer's output with adapter `name`: result = the output so far (W x + b), x_in =
        what the factors read, lora = B A x_in unscaled (..., out)."""
        scale = DoraVariant.magnitude(layer, name) / DoraVariant.norm(layer, name)   # (out,): detached norm
        scale = layer.per_output(scale)             # (out, 1, 1) for a Conv2d's (N, out, H, W) output
        s, bias = layer.scaling[name], getattr(layer.base_layer, "bias", None)
        bias = None if bias is None else layer.per_output(bias)
        if layer.sees_base_input(name):             # then W x = result - b: nothing to recompute
            wx = result if bias is None else result - bias
            out = scale * torch.add(wx, lora, alpha=s)                                # (..., out)
            return out if bias is None else out + bias
        wx = layer.apply_matrix(x_in, layer.get_base_weight().to(x_in.dtype))        # W dropout(x)
        return result + (scale - 1) * wx + scale * (s * lora)

    @staticmethod
    def merge(layer, name: str, weight: torch.Tensor) -> torch.Tensor:
        """W' = m * (W + s B A) / ||W + s B A||, (out, in). The norm is kept for unmerge."""
        adapted = weight + layer.get_delta_weight(name)
        norm = torch.linalg.vector_norm(adapted, dim=1)
        layer.dora_merge_norm[name] = norm
        return (DoraVariant.magnitude(layer, name) / norm)[:, None] * adapted

    @staticmethod
    def unmerge(layer, name: str, weight: torch.Tensor) -> torch.Tensor:
        norm = layer.dora_merge_norm.pop(name)
        return (norm / DoraVariant.magnitude(layer, name))[:, None] * weight - layer.get_delta_weight(name)

