"""Bottleneck adapters: Houlsby et al. 2019 ("Parameter-Efficient Transfer Learning for NLP",
arXiv:1902.00751), Pfeiffer et al. 2021 ("AdapterFusion", arXiv:2005.00247) and the parallel
adapter of He et al. 2022 ("Towards a Unified View of Parameter-Efficient Transfer Learning",
arXiv:2110.04366).

An adapter is a small two-layer network with a narrow middle, added with a skip connection:

    h <- h + s * W_up f(W_down h)       W_down: (m, d), W_up: (d, m), m = d / reduction_factor

W_up starts at zero, so the adapted model starts exactly as the base model. Where it goes
(AdapterHub's config names):
- `mh_adapter`: after the attention block, on its output, before the residual addition;
- `output_adapter`: after the feed-forward block, the same way;
  Houlsby et al. use both; Pfeiffer et al. keep only the second, half the adapters for about
  the same accuracy in their study;
- `is_parallel`: beside the block instead of after it, reading the block's *input*:
  out = block(x) + s * W_up f(W_down x). He et al. find the parallel form better, with s = 4.

Unlike LoRA or (IA)^3, an adapter is a new function with a non-linearity inside, not a change of
a weight matrix: it cannot be merged, and it runs at inference too, which costs latency (the
point of Hu et al.'s Table 1 for LoRA). peft has no bottleneck adapters: the folder layout is
peft's, with peftlab's own peft_type "BOTTLENECK" (keys `...mlp.adapter_down.weight`), which peft
cannot load.
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
from .wrapper import route_rows

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "swish": nn.SiLU, "tanh": nn.Tanh}


@dataclass
class BottleneckConfig(LayerMethodConfig):
    """Bottleneck adapters (see the module docstring). target_modules None: the attention block
    (with mh_adapter) and the feed-forward block (with output_adapter) of every layer, for known
    architectures. Houlsby: mh_adapter=True; Pfeiffer: the defaults; parallel: is_parallel=True."""
    peft_type: ClassVar[str] = "BOTTLENECK"

    reduction_factor: int = 16
    non_linearity: str = "relu"
    mh_adapter: bool = False
    output_adapter: bool = True
    is_parallel: bool = False
    scaling: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        if self.non_linearity not in ACTIVATIONS:
            raise ValueError(f"non_linearity must be one of {', '.join(ACTIVATIONS)}, got {self.non_linearity!r}.")
        if not isinstance(self.reduction_factor, int) or self.reduction_factor < 1:
            raise ValueError(f"reduction_factor must be a positive integer, got {self.reduction_factor!r}.")
        if self.target_modules is None and not (self.mh_adapter or self.output_adapter):
            raise ValueError("With mh_adapter=False and output_adapter=False there is nowhere to put an adapter; "
                             "set one of them, or name the blocks in target_modules.")


def widths(module: nn.Module, hidden_size: int | None) -> tuple[int, int]:
    """(input width, output width) of a block: a linear layer's own, else the model's hidden size."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, Conv1D):
        return module.weight.shape[0], module.nf
    if hidden_size is None:
        raise ValueError(f"Cannot tell the width of {type(module).__name__}: the model has no config.hidden_size.")
    return hidden_size, hidden_size


class BottleneckLayer(BaseTunerLayer):
    """A block (attention, MLP, or a linear layer) followed, or paralleled, by named adapters."""
    adapter_layer_names = ("adapter_down", "adapter_up")
    other_param_names = ("adapter_act", "adapter_scaling", "adapter_parallel")
    mergeable = False

    def __init__(self, base_layer: nn.Module, module_name: str = "", hidden_size: int | None = None):
        super().__init__(base_layer, module_name)
        self.in_width, self.out_width = widths(base_layer, hidden_size)
        self.adapter_down, self.adapter_up, self.adapter_act = nn.ModuleDict(), nn.ModuleDict(), nn.ModuleDict()
        self.adapter_scaling: dict[str, float] = {}
        self.adapter_parallel: dict[str, bool] = {}

    def update_layer(self, name, config):
        parallel = self.adapter_parallel[name] = config.is_parallel
        reads = self.in_width if parallel else self.out_width
        middle = max(1, self.out_width // config.reduction_factor)
        factory = {"dtype": self.compute_dtype, "device": self.base_device}
        self.adapter_down[name] = nn.Linear(reads, middle, **factory)
        self.adapter_up[name] = nn.Linear(middle, self.out_width, **factory)
        nn.init.zeros_(self.adapter_up[name].weight)      # identity at init
        nn.init.zeros_(self.adapter_up[name].bias)
        self.adapter_act[name] = ACTIVATIONS[config.non_linearity]()
        self.adapter_scaling[name] = config.scaling

    def adapter(self, name: str, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """s * W_up f(W_down .) of the block's input x (parallel) or output h (sequential)."""
        source = x if self.adapter_parallel[name] else h
        down, up, act = self.adapter_down[name], self.adapter_up[name], self.adapter_act[name]
        return self.adapter_scaling[name] * up(act(down(source.to(down.weight.dtype))))

    def forward(self, *args, **kwargs):
        """Blocks take their input by keyword too (`self_attn(hidden_states=...)`), and attention
        blocks return (output, attention weights): the adapter acts on the first output."""
        out = self.base_layer(*args, **kwargs)
        names = self.running_adapters()
        if self.disabled or not (names or self.batch_adapter_names is not None):
            return out
        x = args[0] if args else kwargs["hidden_states"]
        h = out[0] if isinstance(out, tuple) else out
        if self.batch_adapter_names is not None:   # each example through its own adapter (or none)
            def one_adapter(name, rows):
                return self.adapter(name, x[rows], h[rows]) if name in self else torch.zeros_like(h[rows])
            delta = route_rows(self.batch_adapter_names, torch.arange(h.shape[0], device=h.device), one_adapter)
        else:
            delta = sum(self.adapter(name, x, h) for name in names)
        h = (h + delta).to(h.dtype)
        return (h, *out[1:]) if isinstance(out, tuple) else h


@register_method
class BottleneckModel(LayerTuner):
    """Bottleneck adapters' tuner: the blocks they follow, per architecture."""
    config_class = BottleneckConfig
    # (attention block, feed-forward block) of each layer, by module name.
    blocks = {"llama": ("self_attn", "mlp"), "mistral": ("self_attn", "mlp"), "qwen2": ("self_attn", "mlp"),
              "qwen3": ("self_attn", "mlp"), "gemma": ("self_attn", "mlp"), "gpt2": ("attn", "mlp"),
              "opt": ("self_attn", "fc2"), "gpt_neox": ("attention", "mlp")}

    @classmethod
    def wrapper_class(cls, module):
        blocky = type(module).__name__.endswith(("Attention", "MLP", "Output"))
        return BottleneckLayer if blocky or isinstance(module, (nn.Linear, Conv1D)) else None

    @classmethod
    def layer_description(cls):
        return "attention blocks, MLP blocks and linear layers (anything whose output has the model's width)"

    @classmethod
    def default_target_modules(cls, model, config):
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        if model_type not in cls.blocks:
            return None
        return [block for block, wanted in zip(cls.blocks[model_type], (config.mh_adapter, config.output_adapter))
                if wanted]

    def create_wrapper(self, module, module_name, adapter_name, config):
        text = getattr(getattr(self.model, "config", None), "get_text_config", None)
        hidden = getattr(text(), "hidden_size", None) if callable(text) else None
        return BottleneckLayer(module, module_name, hidden_size=hidden)
