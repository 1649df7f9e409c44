"""PiSSA (Meng et al. 2024, arXiv:2404.02948): start LoRA from W's principal components.

With the SVD W = U S V^T (out, in), the top r singular triples become the adapter,
s B A = U_r S_r V_r^T, and the base weight is *rewritten* to the residual W - s B A, so the
model's output is unchanged at init but training now moves the directions that matter most.

Because the base weight changed, the layer keeps A0, B0 (the initial factors) to give the
original W back: with the adapter disabled it adds s B0 A0 x to the output, and unloading or
deleting the adapter writes W back (up to float rounding). Merging needs nothing special:
residual + s B A is the trained weight. Everything goes through the layer's base-weight seam
(`get_base_weight` / `set_base_weight`), so PiSSA works on any base LoRA can wrap.
"""
import torch
import torch.nn.functional as F


@torch.no_grad()
def init(layer, name: str) -> None:
    """Set adapter `name`'s factors from the SVD of W and rewrite W to the residual."""
    W = layer.get_base_weight()                                        # (out, in)
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)               # (out, k), (k,), (k, in)
    r, s = layer.r[name], layer.scaling[name]
    root = (S[:r] / s).sqrt()                                         # so that s * B A = U_r S_r V_r^T
    B, A = U[:, :r] * root, root[:, None] * Vh[:r]                    # (out, r), (r, in)
    layer.A(name).copy_(A)
    layer.B(name).copy_(B)
    layer.set_base_weight(W - s * B @ A)
    layer.register_buffer("pissa_A0", A.clone(), persistent=False)
    layer.register_buffer("pissa_B0", B.clone(), persistent=False)
    layer.pissa_adapter, layer.pissa_scaling = name, s


def original_output(layer, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
    """The output of the original W, given `result` = the residual base layer's output."""
    if layer.pissa_adapter is None:
        return result
    principal = F.linear(F.linear(x.to(layer.pissa_A0.dtype), layer.pissa_A0), layer.pissa_B0)
    return result + (layer.pissa_scaling * principal).to(result.dtype)


@torch.no_grad()
def restore_base_weight(layer) -> None:
    """Write the original W = residual + s B0 A0 back, before the layer is unwrapped."""
    if layer.pissa_adapter is None:
        return
    W = layer.get_base_weight() + layer.pissa_scaling * layer.pissa_B0 @ layer.pissa_A0
    layer.set_base_weight(W)
    del layer.pissa_A0, layer.pissa_B0
    layer.pissa_adapter = None
