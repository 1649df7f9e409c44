"""VeRA: Vector-based Random matrix Adaptation (Kopiczko et al. 2023, arXiv:2310.11454).

LoRA trains two low-rank factors in every layer. VeRA draws them once, at random, freezes them
and shares them between all layers; what each layer trains is two scaling vectors:

    ΔW = Λ_b B Λ_d A       A: (r, in), B: (out, r)  random, frozen, one pair for the whole model
                           d: (r,), b: (out,)       trained, one pair per layer; Λ_v = diag(v)

A layer thus trains r + out numbers, however wide its input, so r can be large (peft's default
is 256): each extra rank costs one number per layer. b starts at zero (the adapted model starts
as the base model) and d at `d_initial` (0.1, small values work best: the paper's Table 6c).

One pair (A, B) serves every targeted layer: it is as wide as the widest input and as tall as the
tallest output among the targets, and each layer reads its top-left corner, A[:, :in] and
B[:out, :], exactly as peft does. A and B are Kaiming-uniform draws (A first, then B) from a
torch.Generator seeded with `projection_prng_key`, so they need not be stored:
- save_projection=True (the default): saved once per adapter, as `base_model.vera_A` and
  `base_model.vera_B`; the folder is self-contained;
- save_projection=False: the folder holds only the vectors, and loading draws A and B again from
  the key (the same numbers as peft's, for the same torch version).

Further adapters on one model share the first adapter's A and B, as in peft: they need the same
projection_prng_key, save_projection and r, and their layers must fit inside A and B.
"""
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from .layer import BaseTunerLayer
from .layer_config import LayerMethodConfig, LayerSelection
from .layer_tuner import LayerTuner, record_fan_in_fan_out, visible_layer
from .lora_config import LORA_DEFAULT_TARGETS
from .registry import register_method
from .tuner import compute_dtype

VERA_BIAS = ("none", "all", "vera_only")


@dataclass
class VeraConfig(LayerSelection, LayerMethodConfig):
    """VeRA, as `peft.VeraConfig`.

    r: rows of the shared A (columns of B); each layer trains r + out numbers.
    projection_prng_key: the seed A and B are drawn from; every adapter of a model uses the same.
    save_projection: save A and B with the adapter (True) or draw them again on load (False).
    vera_dropout: dropout on the layer's input, on VeRA's path only.
    d_initial: the starting value of every entry of d (b starts at zero).
    init_weights: True = the above (identity at init); False = b ones, d random (tests only).
    bias: "none", "all" (every bias of the model trains) or "vera_only" (the wrapped layers' biases).
    fan_in_fan_out: recorded for GPT-2's Conv1D, as in LoraConfig.
    exclude_modules is refused: peft's VeraConfig has no such field, so a folder saved with it
    would adapt other layers when peft loads it.
    """
    peft_type: ClassVar[str] = "VERA"

    r: int = 256
    projection_prng_key: int = 0
    save_projection: bool = True
    vera_dropout: float = 0.0
    d_initial: float = 0.1
    fan_in_fan_out: bool = False
    bias: str = "none"
    init_weights: bool = True

    def __post_init__(self):
        super().__post_init__()
        self.check_layer_selection()
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r <= 0:
            raise ValueError(f"r must be a positive integer, got {self.r!r}.")
        if self.bias not in VERA_BIAS:
            raise ValueError(f"bias must be one of {', '.join(map(repr, VERA_BIAS))}, got {self.bias!r}.")
        if not 0.0 <= self.vera_dropout < 1.0:
            raise ValueError(f"vera_dropout must be in [0, 1), got {self.vera_dropout!r}.")
        if self.layers_pattern and self.layers_to_transform is None:
            raise ValueError("layers_pattern only says where to read the layer index for layers_to_transform; "
                             "set layers_to_transform too (as peft requires), or drop layers_pattern.")
        if self.exclude_modules is not None:
            raise ValueError("exclude_modules is not available for VeRA: peft's VeraConfig has no such field, so "
                             "peft would load a folder saved with it onto other layers. Name only the layers to "
                             "adapt in target_modules (a regular expression can leave some out).")

    def to_dict(self) -> dict:
        out = super().to_dict()
        del out["exclude_modules"]   # always None (see above); peft's VeraConfig does not know the field
        return out


def draw_projections(key: int, r: int, in_features: int, out_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A (r, in) and B (out, r): peft's recipe, so that one key gives the same matrices in both
    libraries. Kaiming-uniform with the ReLU gain, from one CPU generator, A drawn first."""
    generator = torch.Generator(device="cpu").manual_seed(key)

    def kaiming_uniform(shape):
        std = math.sqrt(2) / math.sqrt(shape[1])   # gain sqrt(2) over sqrt(fan_in), fan_in = columns
        bound = math.sqrt(3.0) * std               # a uniform on [-bound, bound] has that std
        return torch.empty(shape, dtype=torch.float32).uniform_(-bound, bound, generator=generator)

    vera_A = kaiming_uniform((r, in_features))
    vera_B = kaiming_uniform((out_features, r))
    return vera_A, vera_B


def out_in_features(layer: nn.Module) -> tuple[int, int]:
    """(out, in) of an nn.Linear or of a Conv1D, which stores its weight as (in, out)."""
    out_features, in_features = layer.weight.shape[::-1] if isinstance(layer, Conv1D) else layer.weight.shape
    return out_features, in_features


class BufferDict(nn.Module):
    """{adapter name: tensor} held as buffers: they follow the model in .to() and .cuda(), but
    they are not parameters, so no optimizer sees them and parameter counts leave them out
    (peft keeps VeRA's projections the same way)."""

    def __setitem__(self, name: str, tensor: torch.Tensor) -> None:
        self.register_buffer(name, tensor)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._buffers[name]

    def __delitem__(self, name: str) -> None:
        del self._buffers[name]

    def __contains__(self, name: str) -> bool:
        return name in self._buffers

    def __iter__(self):
        return iter(self._buffers)

    def __len__(self) -> int:
        return len(self._buffers)

    def clear(self) -> None:
        self._buffers.clear()


class VeraLinear(BaseTunerLayer):
    """VeRA around nn.Linear or Conv1D: two trained vectors per adapter, and the tuner's shared
    A and B, of which this layer reads the top-left (r, in) and (out, r) corners."""
    adapter_layer_names = ("vera_lambda_b", "vera_lambda_d")
    other_param_names = ("r", "vera_dropout")

    def __init__(self, base_layer: nn.Module, module_name: str = "", projections: tuple = ()):
        super().__init__(base_layer, module_name)
        self.vera_lambda_b, self.vera_lambda_d = nn.ParameterDict(), nn.ParameterDict()
        self.vera_dropout = nn.ModuleDict()
        self.r: dict[str, int] = {}
        self.out_features, self.in_features = out_in_features(base_layer)
        # The tuner's (vera_A, vera_B) dicts: owned there, read here. Kept in a tuple so that they
        # do not also become submodules of every layer (and appear once per layer in state dicts).
        self.projections = projections

    def update_layer(self, name: str, config: VeraConfig) -> None:
        self.r[name] = config.r
        self.vera_dropout[name] = nn.Dropout(config.vera_dropout) if config.vera_dropout > 0 else nn.Identity()
        where = {"dtype": self.compute_dtype, "device": self.base_device}
        if config.init_weights:   # b = 0: the update starts at zero whatever d is
            lambda_b = torch.zeros(self.out_features, **where)
            lambda_d = torch.full((config.r,), config.d_initial, **where)
        else:                     # both move the output from the start (tests)
            lambda_b = torch.ones(self.out_features, **where)
            lambda_d = torch.randn(config.r).to(**where)
        self.vera_lambda_b[name], self.vera_lambda_d[name] = nn.Parameter(lambda_b), nn.Parameter(lambda_d)

    def A(self, name: str) -> torch.Tensor:   # (r, in): this layer's corner of the shared A
        return self.projections[0][name][:, : self.in_features]

    def B(self, name: str) -> torch.Tensor:   # (out, r): this layer's corner of the shared B
        return self.projections[1][name][: self.out_features, :]

    def get_delta_weight(self, name: str) -> torch.Tensor:
        lambda_b, lambda_d = self.vera_lambda_b[name], self.vera_lambda_d[name]
        return (lambda_b[:, None] * self.B(name)) @ (lambda_d[:, None] * self.A(name))   # Λ_b B Λ_d A

    def adapter_output(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """b * (B (d * (A x))): two thin products, never the (out, in) matrix."""
        lambda_b, lambda_d = self.vera_lambda_b[name], self.vera_lambda_d[name]
        x = self.vera_dropout[name](x.to(lambda_d.dtype))
        return lambda_b * F.linear(lambda_d * F.linear(x, self.A(name)), self.B(name))


@register_method
class VeraModel(LayerTuner):
    """VeRA's tuner: the shared projections (`vera_A`, `vera_B`, one entry per adapter) and what it wraps."""
    config_class = VeraConfig
    layers = {nn.Linear: VeraLinear, Conv1D: VeraLinear}
    shared_state_names = ("vera_A", "vera_B")
    # Targets used when target_modules is None: peft's table for VeRA is LoRA's plus phi.
    default_targets = {**LORA_DEFAULT_TARGETS, "phi": ["q_proj", "v_proj"]}

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.vera_A, self.vera_B = BufferDict(), BufferDict()

    def prepare_config(self, config):
        record_fan_in_fan_out(self, config)

    def check_new_adapter(self, config):
        for name, other in self.peft_config.items():
            if other.projection_prng_key != config.projection_prng_key:
                raise ValueError(f"All VeRA adapters of a model share one pair of projections, so they need the same "
                                 f"projection_prng_key: adapter {name!r} has {other.projection_prng_key}, this one "
                                 f"{config.projection_prng_key}.")
            if other.save_projection != config.save_projection:
                raise ValueError(f"All VeRA adapters of a model must agree on save_projection (as in peft): adapter "
                                 f"{name!r} has {other.save_projection}, this one {config.save_projection}.")

    def pre_injection_hook(self, adapter_name, config, targets):
        shapes = [out_in_features(visible_layer(self.model, n)) for n in targets]
        largest_out, largest_in = max(o for o, _ in shapes), max(i for _, i in shapes)
        owner = next(iter(self.vera_A), None)   # an adapter already here: share its projections
        if owner is None:
            first = visible_layer(self.model, targets[0]).weight
            vera_A, vera_B = draw_projections(config.projection_prng_key, config.r, largest_in, largest_out)
            where = {"dtype": compute_dtype(first.dtype), "device": first.device}
            vera_A, vera_B = vera_A.to(**where), vera_B.to(**where)
        else:
            vera_A, vera_B = self.vera_A[owner], self.vera_B[owner]
            self._check_fits(owner, config.r, vera_A, vera_B, largest_in, largest_out)
        self.vera_A[adapter_name], self.vera_B[adapter_name] = vera_A, vera_B

    @staticmethod
    def _check_fits(owner, r, vera_A, vera_B, largest_in, largest_out):
        """A later adapter reads corners of the first one's A and B: they must be large enough,
        and of its rank (peft fails later, in the forward, for a smaller r)."""
        if vera_A.shape[0] != r:
            raise ValueError(f"This VeRA adapter has r={r}, but it shares adapter {owner!r}'s projections, which "
                             f"have r={vera_A.shape[0]}; give every adapter of a model the same r.")
        if vera_A.shape[1] < largest_in or vera_B.shape[0] < largest_out:
            raise ValueError(f"This VeRA adapter's layers need projections of at least {largest_in} inputs and "
                             f"{largest_out} outputs, but it shares adapter {owner!r}'s, sized for "
                             f"{vera_A.shape[1]} and {vera_B.shape[0]} (made for that adapter's targets). Add the "
                             "adapter with the widest layers first, or use a separate model.")

    def create_wrapper(self, module, module_name, adapter_name, config):
        return VeraLinear(module, module_name, projections=(self.vera_A, self.vera_B))

    def adapter_state_dict(self, adapter_name):
        out = super().adapter_state_dict(adapter_name)
        if not self.peft_config[adapter_name].save_projection:   # drawn again from the key on load
            for attr in self.shared_state_names:
                out.pop(f"base_model.{attr}", None)
        return out
