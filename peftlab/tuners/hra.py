"""HRA: Householder Reflection Adaptation (Yuan et al. 2024, "Bridging The Gap between Low-rank and
Orthogonal Adaptation via Householder Reflection Adaptation", arXiv:2405.17484), as peft implements it.

Like OFT, HRA multiplies the frozen weight by an orthogonal matrix; it builds that matrix from r
Householder reflections, each a mirror across the hyperplane orthogonal to a unit vector u_i:

    H_i = I − 2 u_i u_iᵀ   (‖u_i‖ = 1)        H = H_1 H_2 ··· H_r        y = W H x + b,  merged W' = W H

A reflection is orthogonal (and its own inverse), so H is too: W H keeps the angles between W's
rows, as OFT does. Each u_i is a column of the trained U (in, r), normalised before use, so a layer
trains r · in numbers. The bridge to LoRA: W H − W is a sum of r terms of the form (…) u_iᵀ, so the
change of W has rank at most r, a low-rank update that is also a rotation of the rows.

Initialisation (peft's): U's columns in equal pairs (u_1 = u_2, u_3 = u_4, ...), drawn
Kaiming-uniform; a reflection twice is the identity, so H = I and the adapted model starts as the
base model. That needs r even: with an odd r peft warns and draws every column at random (the
model then does not start as the base model), and so does peftlab. init_weights=False: all random.

apply_GS=True: U is orthonormalised first (Gram-Schmidt, here by a QR factorisation, whose Q differs
from Gram-Schmidt's only in the signs of columns, which Q Qᵀ does not see), and then the r
reflections, across orthogonal directions, commute and multiply to one: H = I − 2 Q Qᵀ.

The orthogonality regulariser of the paper, λ ‖I − ÛᵀÛ‖²_F summed over the adapted layers (Û: U
with unit columns), keeps the directions apart, which the paper reports helps; it is zero exactly
when the u_i are orthonormal. (At the start, with the directions in equal pairs, it alone moves both of a
pair alike and cannot split them; the task's loss does.) peft does not implement it; here it is
`model.base_model.orthogonality_penalty()`, for a training loop to add, e.g.
`train(..., extra_loss=lambda: lam * model.base_model.orthogonality_penalty())`.

Layers: nn.Linear and nn.Conv2d (its kernel read as the matrix (out, in·k·k), tuners/conv.py), as
peft; GPT-2's Conv1D too, which peft's HRA refuses (such an adapter cannot be loaded by peft).
Refused: grouped or dilated convolutions (peft's HRA refuses groups and ignores dilation, so its
output would not be what it merges). peft's name and layout: `hra_u`, shape (in or in·k·k, r).
"""
import math
import warnings
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from .conv import check_conv, is_conv
from .layer import BaseTunerLayer
from .layer_config import LayerMethodConfig, LayerSelection
from .layer_tuner import LayerTuner
from .lora_config import LORA_DEFAULT_TARGETS
from .registry import register_method

HRA_BIAS = ("none", "all", "hra_only")


@dataclass
class HRAConfig(LayerSelection, LayerMethodConfig):
    """HRA, as `peft.HRAConfig`.

    r: the number of reflections (even, for the identity at the start).
    apply_GS: orthonormalise the directions first (one reflection across r orthogonal directions).
    init_weights: True = directions in equal pairs (H = I at the start); False = all random (tests only).
    bias: "none", "all" or "hra_only" (trained biases are base weights: disabling does not undo them).
    """
    peft_type: ClassVar[str] = "HRA"

    r: int = 8
    apply_GS: bool = False
    init_weights: bool = True
    bias: str = "none"

    def __post_init__(self):
        super().__post_init__()
        self.check_layer_selection(pattern_needs_layers=True)
        if self.r <= 0:
            raise ValueError(f"r (the number of reflections) must be a positive integer, got {self.r!r}.")
        if self.bias not in HRA_BIAS:
            raise ValueError(f"bias must be one of {', '.join(map(repr, HRA_BIAS))}, got {self.bias!r}.")


class HRALayer(BaseTunerLayer):
    """HRA around nn.Linear, Conv1D or nn.Conv2d: W becomes W H, H a product of reflections."""
    adapter_layer_names = ("hra_u",)
    other_param_names = ("hra_r", "hra_apply_GS")

    def __init__(self, base_layer: nn.Module, module_name: str = ""):
        super().__init__(base_layer, module_name)
        self.hra_u = nn.ParameterDict()
        self.hra_r: dict[str, int] = {}
        self.hra_apply_GS: dict[str, bool] = {}

    def update_layer(self, name: str, config: HRAConfig) -> None:
        if is_conv(self.base_layer):
            check_conv(self.base_layer, "HRA", self.module_name)
            if any(d != 1 for d in self.base_layer.dilation):
                raise ValueError(f"{self.module_name} is a dilated convolution; peft's HRA ignores dilation in its "
                                 "forward, so an adapter here would not give the same outputs in peft. Leave it "
                                 "out of target_modules.")
        size = self.get_base_weight().shape[1]            # the input size (in·k·k for a convolution)
        if config.apply_GS and config.r > size:
            raise ValueError(f"apply_GS=True needs r <= {size} ({self.module_name}'s input size): only that many "
                             f"directions can be orthonormal. Got r={config.r}.")
        if config.init_weights and config.r % 2 == 0:     # pairs of equal columns: H = I
            half = torch.empty(size, config.r // 2)
            nn.init.kaiming_uniform_(half, a=math.sqrt(5))
            u = half.repeat_interleave(2, dim=1)
        else:
            if config.init_weights:
                warnings.warn(f"HRA with an odd r ({config.r}) cannot start as the identity (its directions come "
                              "in equal pairs); they are drawn at random, as in peft. Use an even r.", stacklevel=2)
            u = nn.init.kaiming_uniform_(torch.empty(size, config.r), a=math.sqrt(5))
        self.hra_u[name] = nn.Parameter(u.to(dtype=self.compute_dtype, device=self.base_device))
        self.hra_r[name], self.hra_apply_GS[name] = config.r, config.apply_GS

    def directions(self, name: str) -> torch.Tensor:
        """(size, r): the unit vectors u_i (orthonormal with apply_GS)."""
        u = self.hra_u[name]
        return torch.linalg.qr(u).Q if self.hra_apply_GS[name] else u / u.norm(dim=0)

    def reflect(self, weight: torch.Tensor, name: str, inverse: bool = False) -> torch.Tensor:
        """W H (or W H⁻¹ = W Hᵀ), one reflection at a time: W − 2 (W u) uᵀ never forms H."""
        u = self.directions(name)
        if self.hra_apply_GS[name]:                       # one reflection, its own inverse
            return weight - 2 * (weight @ u) @ u.T
        for i in reversed(range(u.shape[1])) if inverse else range(u.shape[1]):
            weight = weight - 2 * (weight @ u[:, i:i + 1]) @ u[:, i:i + 1].T
        return weight

    def reflection_matrix(self, name: str) -> torch.Tensor:
        """H, (size, size): the orthogonal matrix adapter `name` multiplies W by."""
        size = self.hra_u[name].shape[0]
        return self.reflect(torch.eye(size, dtype=self.compute_dtype, device=self.base_device), name)

    def forward_adapters(self, names, x, *args, **kwargs):
        weight = self.get_base_weight()
        for name in names:
            weight = self.reflect(weight, name)
        return self.apply_matrix(x.to(weight.dtype), weight, self.get_base_bias()).to(x.dtype)

    def merge_weights(self, name, weight, bias):
        return self.reflect(weight, name), bias

    def unmerge_weights(self, name, weight, bias):
        return self.reflect(weight, name, inverse=True), bias


@register_method
class HRAModel(LayerTuner):
    """HRA's tuner: linear layers and 2-D convolutions; the orthogonality regulariser."""
    config_class = HRAConfig
    layers = {nn.Linear: HRALayer, Conv1D: HRALayer, nn.Conv2d: HRALayer}
    default_targets = LORA_DEFAULT_TARGETS

    def orthogonality_penalty(self, adapter_name: str | None = None) -> torch.Tensor:
        """Σ over the adapter's layers of ‖I − ÛᵀÛ‖²_F (default: the active adapter); zero when every
        layer's directions are orthonormal. Multiply by the paper's λ and add it to the loss."""
        name = adapter_name or self.active_adapter
        self.check_name(name)
        total = torch.zeros(())
        for layer in self.adapter_layers():
            if name in layer:
                u = layer.hra_u[name] / layer.hra_u[name].norm(dim=0)   # unit columns, as the reflections use
                gram = u.T @ u                                              # (r, r)
                eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
                total = total.to(gram) + (eye - gram).square().sum()
        return total
