"""(IA)^3: Infused Adapter by Inhibiting and Amplifying Inner Activations (Liu et al. 2022, "Few-Shot
Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context Learning", arXiv:2205.05638).

Instead of adding to a layer, (IA)^3 *rescales* it with one learned vector l, initialised to ones
(so the adapted model starts as the base model):

    attention keys and values:  y = l * (W x + b)          l: (out,)   rescales the output
    feed-forward layers:        y = W (l * x) + b          l: (in,)    rescales the input

The paper puts l_k and l_v on the keys and values of every attention layer and l_ff on the
activations inside the feed-forward block, that is on the *input* of its second linear layer
(`feedforward_modules`, e.g. down_proj). That is one number per channel: for the bundled
model about 0.01% of its weights, against about 1% for LoRA r=8 on q and v.

Both kinds merge into the weights: l * (W x + b) = (diag(l) W) x + l * b scales W's rows and
the bias; W (l * x) = (W diag(l)) x scales W's columns and leaves the bias. Unmerging divides
(as peft does, with 1e-8 added against division by zero), so it is exact only up to rounding.

Layout as peft's: `ia3_l[name]` has shape (out, 1) or, for a feed-forward layer, (1, in), so a
saved folder loads in both libraries.
"""
import re
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from .layer import BaseTunerLayer
from .layer_config import LayerMethodConfig
from .layer_tuner import LayerTuner, record_fan_in_fan_out
from .registry import register_method


@dataclass
class IA3Config(LayerMethodConfig):
    """(IA)^3, as `peft.IA3Config`.

    feedforward_modules: the targets whose *input* is rescaled (a list of name endings, or a
        regular expression matching whole names); they must be among target_modules. None:
        the default for the architecture (down_proj for Llama, mlp.c_proj for GPT-2...).
    init_ia3_weights: True = ones (identity at init); False = random (tests only).
    fan_in_fan_out: recorded for GPT-2's Conv1D, as in LoraConfig.
    """
    peft_type: ClassVar[str] = "IA3"

    feedforward_modules: list[str] | str | None = None
    fan_in_fan_out: bool = False
    init_ia3_weights: bool = True

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.feedforward_modules, (set, tuple)):
            self.feedforward_modules = sorted(self.feedforward_modules)
        targets, feedforward = self.target_modules, self.feedforward_modules
        if isinstance(targets, list) and isinstance(feedforward, list) and not set(feedforward) <= set(targets):
            raise ValueError(f"feedforward_modules {sorted(set(feedforward) - set(targets))} are not in target_modules "
                             f"{targets}: a feed-forward module must also be a target (as in peft).")


def is_feedforward(config: IA3Config, module_name: str) -> bool:
    """peft's rule: a regex must match the whole name; a list entry is a plain ending of it."""
    patterns = config.feedforward_modules
    if isinstance(patterns, str):
        return re.fullmatch(patterns, module_name) is not None
    return any(module_name.endswith(p) for p in patterns or [])


class IA3Linear(BaseTunerLayer):
    """(IA)^3 around nn.Linear or Conv1D: one vector per adapter, on the input or on the output."""
    adapter_layer_names = ("ia3_l",)
    other_param_names = ("is_feedforward",)

    def __init__(self, base_layer: nn.Module, module_name: str = ""):
        super().__init__(base_layer, module_name)
        self.ia3_l = nn.ParameterDict()
        self.is_feedforward: dict[str, bool] = {}

    def update_layer(self, name: str, config: IA3Config) -> None:
        out_features, in_features = self.get_base_weight().shape
        feedforward = self.is_feedforward[name] = is_feedforward(config, self.module_name)
        shape = (1, in_features) if feedforward else (out_features, 1)
        weight = torch.empty(shape, dtype=self.compute_dtype, device=self.base_device)
        self.ia3_l[name] = nn.Parameter(nn.init.ones_(weight) if config.init_ia3_weights else nn.init.normal_(weight))

    def forward_adapters(self, names, x, *args, **kwargs):
        scale_in = [self.ia3_l[n].flatten() for n in names if self.is_feedforward[n]]       # each (in,)
        scale_out = [self.ia3_l[n].flatten() for n in names if not self.is_feedforward[n]]  # each (out,)
        for scale in scale_in:
            x = (x.to(scale.dtype) * scale).to(x.dtype)
        result = self.base_layer(x, *args, **kwargs)
        for scale in scale_out:
            result = (result.to(scale.dtype) * scale).to(result.dtype)
        return result

    def _scales(self, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(what multiplies W (out, in), what multiplies the bias or None) for adapter `name`."""
        vector = self.ia3_l[name]                                            # (1, in) or (out, 1)
        return vector, None if self.is_feedforward[name] else vector.flatten()

    def merge_weights(self, name, weight, bias):
        w_scale, b_scale = self._scales(name)
        return weight * w_scale, bias if bias is None or b_scale is None else bias * b_scale

    def unmerge_weights(self, name, weight, bias):
        w_scale, b_scale = self._scales(name)
        return weight / (w_scale + 1e-8), bias if bias is None or b_scale is None else bias / (b_scale + 1e-8)


@register_method
class IA3Model(LayerTuner):
    """(IA)^3's tuner: it wraps linear layers; defaults from peft's tables (a subset)."""
    config_class = IA3Config
    layers = {nn.Linear: IA3Linear, Conv1D: IA3Linear}
    default_targets = {
        "llama": ["k_proj", "v_proj", "down_proj"], "mistral": ["k_proj", "v_proj", "down_proj"],
        "qwen2": ["q_proj", "v_proj", "down_proj"], "qwen3": ["q_proj", "v_proj", "down_proj"],
        "gemma": ["q_proj", "v_proj", "down_proj"], "opt": ["q_proj", "k_proj", "fc2"],
        "gpt2": ["c_attn", "mlp.c_proj"], "bert": ["key", "value", "output.dense"],
        "roberta": ["key", "value", "output.dense"], "gpt_neox": ["query_key_value", "dense_4h_to_h"],
    }
    default_feedforward = {
        "llama": ["down_proj"], "mistral": ["down_proj"], "qwen2": ["down_proj"], "qwen3": ["down_proj"],
        "gemma": ["down_proj"], "opt": ["fc2"], "gpt2": ["mlp.c_proj"], "bert": ["output.dense"],
        "roberta": ["output.dense"], "gpt_neox": ["dense_4h_to_h"],
    }

    def prepare_config(self, config):
        if config.feedforward_modules is None:   # as peft: the architecture's default
            model_type = getattr(getattr(self.model, "config", None), "model_type", None)
            if model_type not in self.default_feedforward:
                raise ValueError(f"feedforward_modules is required for {type(self.model).__name__} (no default for "
                                 "it): name the targets whose input (IA)^3 rescales, or [] for none.")
            config.feedforward_modules = list(self.default_feedforward[model_type])
        record_fan_in_fan_out(self, config)
