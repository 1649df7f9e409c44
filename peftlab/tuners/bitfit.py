"""BitFit (Ben Zaken, Ravfogel & Goldberg 2022, "BitFit: Simple Parameter-efficient Fine-tuning for
Transformer-based Masked Language-models", arXiv:2106.10199): train only the bias terms.

Every linear and norm layer of a BERT or GPT-2 computes W x + b. BitFit freezes every W and trains
every b: under 0.1% of BERT's parameters, and the paper finds it competitive with full
fine-tuning on small to medium data. It is a *selective* method: it adds nothing, it picks which
existing numbers may move.

peftlab writes it as an adapter. Each layer that has a bias gets a trainable change of it, Δb,
starting at zero:   y = W x + (b + Δb).
Training Δb with b frozen takes exactly the steps that training b itself would (the same
gradient; Adam's moments start at zero either way; with weight decay off), so this *is* BitFit,
and in exchange it gets what adapters have: the model starts unchanged, adapters switch off and
on, several tasks share one base, and a saved adapter holds only the Δb. Merging writes b + Δb.

A layer without a bias is never given one: Llama-style models have no bias terms at all, so
BitFit has nothing to train there, and get_peft_model says so. peft has no BitFit: the folder
layout is peft's (keys `...attn.c_attn.bitfit_bias`), with peftlab's own peft_type "BITFIT".
"""
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from .layer import BaseTunerLayer
from .layer_config import LayerMethodConfig
from .layer_tuner import LayerTuner
from .registry import register_method
from .targeting import NORM_TYPES


@dataclass
class BitFitConfig(LayerMethodConfig):
    """BitFit: target_modules names the layers whose bias trains (None: every layer with a bias)."""
    peft_type: ClassVar[str] = "BITFIT"


def has_bias(module: nn.Module) -> bool:
    return isinstance(getattr(module, "bias", None), nn.Parameter)


class BitFitLayer(BaseTunerLayer):
    """A layer with a bias, plus one bias change Δb per adapter: y = W x + b + Δb."""
    adapter_layer_names = ("bitfit_bias",)

    def __init__(self, base_layer: nn.Module, module_name: str = ""):
        super().__init__(base_layer, module_name)
        self.bitfit_bias = nn.ParameterDict()

    def update_layer(self, name, config):
        bias = self.base_layer.bias
        self.bitfit_bias[name] = nn.Parameter(torch.zeros(bias.shape, dtype=self.compute_dtype, device=bias.device))

    def forward_adapters(self, names, x, *args, **kwargs):
        result = self.base_layer(x, *args, **kwargs)
        out_dtype = result.dtype
        for name in names:
            result = result + self.bitfit_bias[name]                  # (..., out) + (out,)
        return result.to(out_dtype)

    def merge_weights(self, name, weight, bias):
        return weight, bias + self.bitfit_bias[name]

    def unmerge_weights(self, name, weight, bias):
        return weight, bias - self.bitfit_bias[name]


@register_method
class BitFitModel(LayerTuner):
    """BitFit's tuner: it wraps the layers that have a bias, all of them by default."""
    config_class = BitFitConfig
    layers = {nn.Linear: BitFitLayer, Conv1D: BitFitLayer, **{t: BitFitLayer for t in NORM_TYPES}}

    @classmethod
    def wrapper_class(cls, module):
        return super().wrapper_class(module) if has_bias(module) else None

    @classmethod
    def layer_description(cls):
        return "layers that have a bias term (nn.Linear, transformers.Conv1D, LayerNorm with one)"

    @classmethod
    def default_target_modules(cls, model, config):
        names = [n for n, m in model.named_modules() if n and cls.wrapper_class(m) is not None]
        if not names:
            raise ValueError(f"BitFit trains the bias terms a model already has, and {type(model).__name__} has "
                             "none (Llama-style models use no biases). Use a model with biases, such as the "
                             "bundled pico-gpt2-1m, or another method.")
        return names
