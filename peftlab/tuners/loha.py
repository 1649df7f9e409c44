"""LoHa: low-rank Hadamard product (Hyeon-Woo et al. 2021, "FedPara: Low-Rank Hadamard Product for
Communication-Efficient Federated Learning", arXiv:2108.06098), as peft and LyCORIS implement it.

The update is the elementwise (Hadamard, ⊙) product of two low-rank matrices:

    ΔW = (B1 A1) ⊙ (B2 A2) · alpha / r      B1, B2: (out, r)   A1, A2: (r, in)

Why a product: LoRA's B A has rank at most r. The Hadamard product of two rank-r matrices can
reach rank r² (FedPara, Proposition 1): entry (i, j) is sum over p, q of B1[i,p] B2[i,q] A1[p,j] A2[q,j],
so ΔW = C D with C (out, r²) and D (r², in), one column of C and one row of D per pair (p, q).
LoHa trains 2 r (in + out) numbers, as many as LoRA of rank 2r, yet its update can have rank
min(r², in, out), far more than 2r once r > 2 (tests/test_loha_lokr.py measures it).

peft's names (so folders load in both): B1 = `hada_w1_a`, A1 = `hada_w1_b`, B2 = `hada_w2_a`,
A2 = `hada_w2_b` ("a" is the left factor, not LoRA's A). Init as peft: Kaiming-uniform for
three factors and `hada_w2_b` = 0, so ΔW starts at zero; init_weights=False leaves all four
random (tests only). The scale is alpha / r, from the module's `rank_pattern` / `alpha_pattern`
entries when they match. Dropouts and the forward are shared with LoKr (tuners/lycoris.py).

Layers: nn.Linear, as peft; and GPT-2's Conv1D, which peft's LoHa refuses. peftlab goes beyond
peft here: the update is built as an (out, in) matrix and the base weight is read through the
seam (layer.get_base_weight), so a base that stores W transposed needs nothing more. Such an
adapter cannot be loaded by peft. Convolutions (and use_effective_conv2d, their factorization)
are not implemented.

peft computes the gradient of ΔW with a hand-written backward that recomputes the two products
instead of storing them; peftlab lets autograd do it (the same numbers, two (out, in) matrices
kept per layer during training).
"""
import math
from dataclasses import dataclass
from typing import ClassVar

from torch import nn
from transformers.pytorch_utils import Conv1D

from .layer_tuner import LayerTuner
from .lycoris import DEFAULT_TARGETS, LycorisConfig, LycorisLayer
from .registry import register_method


@dataclass
class LoHaConfig(LycorisConfig):
    """LoHa, as `peft.LoHaConfig` (fields: see LycorisConfig in tuners/lycoris.py).

    r: rank of each of the two factors (ΔW can reach rank r²).   alpha: ΔW is scaled by alpha / r.
    init_weights: True (one factor zero, ΔW = 0 at start) or False (all random).
    """
    peft_type: ClassVar[str] = "LOHA"

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.init_weights, bool):
            raise ValueError(f"init_weights must be True or False for LoHa, got {self.init_weights!r}.")


class LoHaLinear(LycorisLayer):
    """LoHa around nn.Linear (weight (out, in)) or transformers' Conv1D (weight (in, out))."""
    adapter_layer_names = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")

    def __init__(self, base_layer: nn.Module, module_name: str = ""):
        super().__init__(base_layer, module_name)
        self.hada_w1_a, self.hada_w1_b = nn.ParameterDict(), nn.ParameterDict()
        self.hada_w2_a, self.hada_w2_b = nn.ParameterDict(), nn.ParameterDict()

    def create_factors(self, name, r, out_features, in_features, config):
        self.hada_w1_a[name], self.hada_w1_b[name] = self.new_factor(out_features, r), self.new_factor(r, in_features)
        self.hada_w2_a[name], self.hada_w2_b[name] = self.new_factor(out_features, r), self.new_factor(r, in_features)

    def init_factors(self, name, init_weights):
        for store in (self.hada_w1_a, self.hada_w1_b, self.hada_w2_a, self.hada_w2_b):
            nn.init.kaiming_uniform_(store[name], a=math.sqrt(5))
        if init_weights:   # one zero factor is enough for ΔW = 0; its gradient is not zero
            nn.init.zeros_(self.hada_w2_b[name])

    def unscaled_delta(self, name):
        first = self.hada_w1_a[name] @ self.hada_w1_b[name]     # (out, in), rank <= r
        second = self.hada_w2_a[name] @ self.hada_w2_b[name]    # (out, in), rank <= r
        return first * second                                   # rank <= r²


@register_method
class LoHaModel(LayerTuner):
    """LoHa's tuner: it wraps linear layers; default targets are peft's (LoRA's table)."""
    config_class = LoHaConfig
    layers = {nn.Linear: LoHaLinear, Conv1D: LoHaLinear}
    default_targets = DEFAULT_TARGETS
