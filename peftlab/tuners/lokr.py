"""LoKr: low-rank Kronecker product (Yeh et al. 2023, "Navigating Text-To-Image Customization: From
LyCORIS Fine-Tuning to Model Evaluation", arXiv:2309.14859), as peft implements it.

The update is a Kronecker product (⊗) of two small matrices:

    ΔW = (W1 ⊗ W2) · alpha / r      W1: (a, c)   W2: (b, d)   out = a b,  in = c d

ΔW is an a x c grid of blocks, block (i, j) being W1[i, j] · W2. Its rank is rank(W1) · rank(W2),
so a few numbers can make a full-rank update: a 128 x 128 layer splits as 128 = 8 · 16, and
W1 (8, 8) with W2 (16, 16) are 320 numbers for an update of rank up to 128 (LoRA r=8: 2048
numbers, rank 8). The price is structure: ΔW repeats the pattern W2 in every block.

How a dimension is split (`factorization`, peft's rule): into m <= n with m n = dimension and m
as close to the square root as the divisors allow, m not above `decompose_factor` when one is
given (-1: no limit); a decompose_factor that divides the dimension is used as is, giving
(factor, dimension / factor) in that order. A prime dimension splits as (1, dimension). W1 gets
the small parts (a, c) = (out's m, in's m), W2 the large ones (b, d).

Which factors are low rank (peft's rule, per module, r from `rank_pattern` if it matches):
- W2 = w2_a @ w2_b, (b, r) @ (r, d), when r < max(b, d) / 2; otherwise W2 is one full matrix;
- W1 = w1_a @ w1_b likewise, only with decompose_both=True and r < max(a, c) / 2; otherwise full.
Small layers therefore often get two full factors, and r then shapes nothing.

Scaling: alpha / r always, as in peft, even when both factors are full. The LyCORIS library
itself uses scale 1 in that case, so the weights of a LyCORIS-trained LoKr with two full
factors and alpha != r give, in peft and here, alpha / r times the update LyCORIS applied.

peft's names: `lokr_w1` or `lokr_w1_a` / `lokr_w1_b`, `lokr_w2` or `lokr_w2_a` / `lokr_w2_b`.
Init: True (peft's default) W1 (or w1_a) = 0 and the rest Kaiming-uniform, so ΔW starts at
zero; "lycoris" (the LyCORIS repository's choice) W2 (or w2_b) = 0 instead; False: all random
(tests only). Dropouts and the forward are shared with LoHa (tuners/lycoris.py); rank dropout
rescales the kept rows only with `rank_dropout_scale`.

Layers: nn.Linear, as peft; and GPT-2's Conv1D, which peft's LoKr refuses. peftlab goes beyond
peft here: ΔW is built as an (out, in) matrix and the base weight is read through the seam
(layer.get_base_weight), so a base storing W transposed needs nothing more; peft cannot load
such an adapter. Convolutions (and use_effective_conv2d) are not implemented.
"""
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from .layer_tuner import LayerTuner
from .lycoris import DEFAULT_TARGETS, LycorisConfig, LycorisLayer
from .registry import register_method

LOKR_INITS = (True, False, "lycoris")


@dataclass
class LoKrConfig(LycorisConfig):
    """LoKr, as `peft.LoKrConfig` (the shared fields: see LycorisConfig in tuners/lycoris.py).

    r: rank of the low-rank factors, where a factor is low rank (see the module docstring).
    alpha: ΔW is scaled by alpha / r.
    decompose_both: W1 low rank too (when r < max(a, c) / 2).
    decompose_factor: the largest first part when splitting a dimension in two (-1: no limit).
    rank_dropout_scale: rescale the rows kept by rank_dropout by 1 / (fraction kept).
    init_weights: True, "lycoris" (either way ΔW starts at zero) or False (all random).
    """
    peft_type: ClassVar[str] = "LOKR"

    init_weights: bool | str = True
    decompose_both: bool = False
    decompose_factor: int = -1
    rank_dropout_scale: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.init_weights not in LOKR_INITS or isinstance(self.init_weights, int) \
                and not isinstance(self.init_weights, bool):
            raise ValueError(f"init_weights={self.init_weights!r} is not a LoKr init; choose one of "
                             f"{', '.join(map(repr, LOKR_INITS))}.")
        factor = self.decompose_factor
        if not isinstance(factor, int) or isinstance(factor, bool) or not (factor == -1 or factor > 0):
            raise ValueError(f"decompose_factor must be -1 (no limit) or a positive integer, got {factor!r}.")


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """(m, n) with m * n = dimension, split as peft splits it (see the module docstring)."""
    if factor > 0 and dimension % factor == 0:
        return factor, dimension // factor
    limit = dimension if factor == -1 else factor
    m = 1
    for divisor in range(2, dimension + 1):   # the divisors, upwards, until past the square root
        if dimension % divisor:
            continue
        if divisor > limit:
            break
        m = divisor
        if divisor * divisor >= dimension:
            break
    n = dimension // m
    return min(m, n), max(m, n)


class LoKrLinear(LycorisLayer):
    """LoKr around nn.Linear (weight (out, in)) or transformers' Conv1D (weight (in, out)).

    Each factor is stored either full (`lokr_w1`) or as two low-rank parts (`lokr_w1_a`,
    `lokr_w1_b`): an adapter has an entry in one or the other dicts, as in peft."""
    adapter_layer_names = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")

    def __init__(self, base_layer: nn.Module, module_name: str = ""):
        super().__init__(base_layer, module_name)
        for attr in self.adapter_layer_names:
            setattr(self, attr, nn.ParameterDict())

    def create_factors(self, name, r, out_features, in_features, config):
        a, b = factorization(out_features, config.decompose_factor)
        c, d = factorization(in_features, config.decompose_factor)
        if config.decompose_both and r < max(a, c) / 2:
            self.lokr_w1_a[name], self.lokr_w1_b[name] = self.new_factor(a, r), self.new_factor(r, c)
        else:
            self.lokr_w1[name] = self.new_factor(a, c)
        if r < max(b, d) / 2:
            self.lokr_w2_a[name], self.lokr_w2_b[name] = self.new_factor(b, r), self.new_factor(r, d)
        else:
            self.lokr_w2[name] = self.new_factor(b, d)

    def init_factors(self, name, init_weights):
        for attr in self.adapter_layer_names:
            if name in getattr(self, attr):
                nn.init.kaiming_uniform_(getattr(self, attr)[name], a=math.sqrt(5))
        # Zero one factor (or one part of it) so that ΔW starts at zero: W1 by default, W2 for "lycoris".
        if init_weights is True:
            nn.init.zeros_((self.lokr_w1 if name in self.lokr_w1 else self.lokr_w1_a)[name])
        elif init_weights == "lycoris":
            nn.init.zeros_((self.lokr_w2 if name in self.lokr_w2 else self.lokr_w2_b)[name])

    def factor(self, name: str, which: int) -> torch.Tensor:
        """W1 (which=1) or W2 (which=2) as a matrix, multiplying out its low-rank parts."""
        full, left, right = (getattr(self, f"lokr_w{which}{part}") for part in ("", "_a", "_b"))
        return full[name] if name in full else left[name] @ right[name]

    def unscaled_delta(self, name):
        return torch.kron(self.factor(name, 1), self.factor(name, 2))   # (a b, c d) = (out, in)


@register_method
class LoKrModel(LayerTuner):
    """LoKr's tuner: it wraps linear layers; default targets are peft's (LoRA's table)."""
    config_class = LoKrConfig
    layers = {nn.Linear: LoKrLinear, Conv1D: LoKrLinear}
    default_targets = DEFAULT_TARGETS
