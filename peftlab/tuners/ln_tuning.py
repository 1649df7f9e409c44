"""LayerNorm tuning (Zhao et al. 2023, "Tuning LayerNorm in Attention: Towards Efficient Multi-Modal
LLM Finetuning", arXiv:2312.11420): train the normalisation layers and nothing else.

A LayerNorm computes y = gamma * (x - mean) / std + beta, an RMSNorm (Llama) y = gamma * x / rms(x):
one or two vectors of the model's width per norm. Tuning only those is a *selective* method, like
BitFit: no new function is added, a few existing numbers move. Zhao et al. report that tuning the
norms of an LLM's attention blocks is competitive with full fine-tuning and LoRA when adapting it
to a new modality, at a small fraction of LoRA's parameters.

Layout as peft's LNTuningModel, so folders load in both libraries: each targeted norm gets a
trainable *copy* per adapter, `ln_tuning_layers[name]` (keys `...input_layernorm.ln_tuning_layers.weight`),
so the adapted model starts as the base model, and switching or disabling adapters is exact.
Merging writes the copy's values into the base norm; the base values are kept (two vectors) so
that unmerging is exact too.
"""
import copy
from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from .layer import BaseTunerLayer
from .layer_config import LayerMethodConfig
from .layer_tuner import LayerTuner
from .registry import register_method
from .targeting import is_norm


@dataclass
class LNTuningConfig(LayerMethodConfig):
    """LayerNorm tuning, as `peft.LNTuningConfig`: target_modules names the norms to tune (None:
    every norm of the block, for known architectures)."""
    peft_type: ClassVar[str] = "LN_TUNING"


class LNTuningLayer(BaseTunerLayer):
    """A norm with one trainable copy per adapter; the active copy runs instead of the original."""
    adapter_layer_names = ("ln_tuning_layers",)
    other_param_names = ("ln_merge_stash",)

    def __init__(self, base_layer: nn.Module, module_name: str = ""):
        super().__init__(base_layer, module_name)
        self.ln_tuning_layers = nn.ModuleDict()
        self.ln_merge_stash: dict = {}   # the base's (weight, bias) while an adapter is merged

    def update_layer(self, name, config):
        self.ln_tuning_layers[name] = copy.deepcopy(self.base_layer)

    def forward_adapters(self, names, x, *args, **kwargs):
        return self.ln_tuning_layers[names[-1]](x, *args, **kwargs)   # one adapter runs at a time

    def merge_weights(self, name, weight, bias):
        self.ln_merge_stash[name] = (weight.clone(), None if bias is None else bias.clone())
        tuned = self.ln_tuning_layers[name]
        tuned_bias = getattr(tuned, "bias", None)
        new_bias = None if tuned_bias is None else tuned_bias.detach().to(bias.dtype)
        return tuned.weight.detach().to(weight.dtype), new_bias

    def unmerge_weights(self, name, weight, bias):
        return self.ln_merge_stash.pop(name)


@register_method
class LNTuningModel(LayerTuner):
    """LayerNorm tuning's tuner: it wraps normalisation layers; defaults from peft's table."""
    config_class = LNTuningConfig
    default_targets = {
        "llama": ["input_layernorm", "post_attention_layernorm", "norm"],
        "mistral": ["input_layernorm", "post_attention_layernorm", "norm"],
        "gemma": ["input_layernorm", "post_attention_layernorm", "norm"],
        "qwen2": ["post_attention_layernorm"], "qwen3": ["post_attention_layernorm"],
        "gpt2": ["ln_1", "ln_2", "ln_f"],
    }

    @classmethod
    def wrapper_class(cls, module):
        return LNTuningLayer if is_norm(module) else None

    @classmethod
    def layer_description(cls):
        return "normalisation layers (LayerNorm, RMSNorm, GroupNorm)"
