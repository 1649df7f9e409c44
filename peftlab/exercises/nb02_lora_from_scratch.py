"""Checkers for 02_lora_from_scratch."""
from types import SimpleNamespace

import torch
from torch import nn

from .checking import Verdict, attempted, call_stub, report


def check_lora_parameter_count(answer) -> Verdict:
    """🌱 r * (d_in + d_out) for a 4096 x 4096 matrix at r = 8."""
    if not attempted(answer):
        return report("LoRA parameter count", None)
    truth = 8 * (4096 + 4096)
    if answer == truth:
        return report("LoRA parameter count", True, f"{truth:,} = {truth / 4096**2:.2%} of the matrix's {4096**2:,}.")
    if answer == 8 * 4096:
        return report("LoRA parameter count", False, "that is A alone (r x d_in); B (d_out x r) trains too.")
    return report("LoRA parameter count", False, "A is r x d_in and B is d_out x r.")


def _example_layer(seed: int = 0):
    """An object shaped like the notebook's LinearWithLoRA (linear, lora.A, lora.B, lora.scale)."""
    g = torch.Generator().manual_seed(seed)
    linear = nn.Linear(12, 10)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(10, 12, generator=g))
        linear.bias.copy_(torch.randn(10, generator=g))
    lora = SimpleNamespace(A=torch.randn(3, 12, generator=g), B=torch.randn(10, 3, generator=g), scale=2.0)
    return SimpleNamespace(linear=linear, lora=lora)


def check_unmerge(fn) -> Verdict:
    """🌿 Recover W0 (and the bias) from a merged layer and the LoRA factors."""
    layer = _example_layer()
    merged = nn.Linear(12, 10)
    with torch.no_grad():
        merged.weight.copy_(layer.linear.weight + layer.lora.scale * layer.lora.B @ layer.lora.A)
        merged.bias.copy_(layer.linear.bias)
    result = call_stub(fn, merged, layer)
    if not attempted(result):
        return report("unmerge", None)
    if not isinstance(result, nn.Linear):
        return report("unmerge", False, f"return an nn.Linear, not {type(result).__name__}.")
    if not torch.allclose(result.weight, layer.linear.weight, atol=1e-5):
        wrong_scale = merged.weight - layer.lora.B @ layer.lora.A
        hint = ("did you forget the scale alpha / r?" if torch.allclose(result.weight, wrong_scale, atol=1e-5)
                else "W0 = W - (alpha / r) * B @ A.")
        return report("unmerge", False, hint)
    if not torch.allclose(result.bias, layer.linear.bias):
        return report("unmerge", False, "the weight is right; copy the bias too (LoRA never changes it).")
    return report("unmerge", True, "W0 recovered (up to float rounding).")


def check_lora_forward(fn) -> Verdict:
    """🌳 x W0^T + b + scale * (x A^T) B^T, for any leading shape, without forming B A."""
    layer = _example_layer(1)
    x = torch.randn(2, 5, 12, generator=torch.Generator().manual_seed(2))
    W0, bias, A, B, scale = layer.linear.weight.detach(), layer.linear.bias.detach(), layer.lora.A, layer.lora.B, layer.lora.scale
    formed = []
    original_matmul = torch.Tensor.__matmul__

    def spy(a, b):   # record every product shaped like B @ A: (d_out, r) @ (r, d_in)
        if a.dim() == 2 and b.dim() == 2 and a.shape == B.shape and b.shape == A.shape:
            formed.append(True)
        return original_matmul(a, b)

    torch.Tensor.__matmul__ = spy
    try:
        result = call_stub(fn, x, W0, bias, A, B, scale)
    finally:
        torch.Tensor.__matmul__ = original_matmul
    if not attempted(result):
        return report("LoRA forward", None)
    expected = x @ W0.T + bias + scale * (x @ A.T) @ B.T
    if result.shape != expected.shape:
        return report("LoRA forward", False, f"shape {tuple(result.shape)}, expected {tuple(expected.shape)}.")
    if not torch.allclose(result, expected, atol=1e-4):
        return report("LoRA forward", False, "wrong values: h = x W0^T + b + scale * (x A^T) B^T.")
    if formed:
        return report("LoRA forward", False, "right values, but you formed B @ A: multiply x by A^T first.")
    return report("LoRA forward", True, "and B @ A was never formed.")
