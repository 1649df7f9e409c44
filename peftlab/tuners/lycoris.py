"""What LoHa and LoKr share (peft calls them the LyCORIS methods, after the library they come from).

Both are additive: each builds an update ΔW (out, in) from small factors, scaled by
alpha / r, and the layer computes y = W x + ΔW x. They differ only in how ΔW is built (a
Hadamard product in tuners/loha.py, a Kronecker product in tuners/lokr.py), so everything
else lives here:
- the config fields both have (r, alpha, their per-module patterns, the two dropouts, init);
- choosing r and alpha for one module (`rank_pattern` / `alpha_pattern`, peft's rule);
- the forward, with peft's two regularisers, active in training mode only:
  module_dropout: the whole adapter is skipped for a step with probability p;
  rank_dropout: despite the name, each *output row* of ΔW is zeroed with probability p (what
  peft does), and the kept rows are rescaled by 1 / (fraction kept) (LoHa always; LoKr when
  `rank_dropout_scale`).
Unlike LoRA, these methods form ΔW on every forward (as peft does): ΔW x cannot be computed
from the factors without it.
"""
from dataclasses import dataclass, field

import torch
from torch import nn

from .layer import BaseTunerLayer
from .layer_config import LayerMethodConfig, LayerSelection, check_ranks, pattern_value
from .lora_config import LORA_DEFAULT_TARGETS

# peft uses LoRA's table of default targets for both methods.
DEFAULT_TARGETS = LORA_DEFAULT_TARGETS


@dataclass
class LycorisConfig(LayerSelection, LayerMethodConfig):
    """The fields LoHaConfig and LoKrConfig share, with peft's names and defaults.

    r: rank of the low-rank factors.   alpha: ΔW is scaled by alpha / r.
    rank_pattern / alpha_pattern: {pattern: value} overriding r / alpha for the modules whose
        name ends with the pattern (a regular expression), as in LoraConfig.
    rank_dropout / module_dropout: see the module docstring (0 = off, the default).
    use_effective_conv2d: a factorization for convolution kernels; peftlab wraps no
        convolutions, so it is refused rather than ignored.
    init_weights: True = ΔW starts at zero (one factor is zero); False = every factor random, so
        the adapter acts from the start (tests only).
    """
    r: int = 8
    alpha: float = 8
    rank_dropout: float = 0.0
    module_dropout: float = 0.0
    use_effective_conv2d: bool = False
    init_weights: bool = True
    rank_pattern: dict = field(default_factory=dict)
    alpha_pattern: dict = field(default_factory=dict)

    def __post_init__(self):
        super().__post_init__()
        self.check_layer_selection()
        check_ranks(self.r, self.rank_pattern)
        for name in ("rank_dropout", "module_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}.")
        if self.use_effective_conv2d:
            raise ValueError("use_effective_conv2d=True is not implemented in peftlab: it factorizes convolution "
                             "kernels, and peftlab's LoHa and LoKr wrap only linear layers (nn.Linear, Conv1D). "
                             "Leave it False, or use peft for convolutions.")


class LycorisLayer(BaseTunerLayer):
    """An additive layer whose ΔW is built from factors: a subclass creates, initialises and
    combines them (`create_factors`, `init_factors`, `unscaled_delta`); this class does the rest."""
    other_param_names = ("r", "alpha", "scaling", "rank_dropout", "rank_dropout_scale", "module_dropout")

    def __init__(self, base_layer: nn.Module, module_name: str = ""):
        super().__init__(base_layer, module_name)
        self.r, self.alpha, self.scaling = {}, {}, {}
        self.rank_dropout, self.rank_dropout_scale, self.module_dropout = {}, {}, {}

    # --- what a subclass writes ------------------------------------------------------------
    def create_factors(self, name: str, r: int, out_features: int, in_features: int, config) -> None:
        raise NotImplementedError

    def init_factors(self, name: str, init_weights) -> None:
        raise NotImplementedError

    def unscaled_delta(self, name: str) -> torch.Tensor:
        """ΔW before the alpha / r scale, (out, in)."""
        raise NotImplementedError

    # --- shared ----------------------------------------------------------------------------
    def update_layer(self, name: str, config: LycorisConfig) -> None:
        r = pattern_value(config.rank_pattern, self.module_name, config.r)
        alpha = pattern_value(config.alpha_pattern, self.module_name, config.alpha)
        self.r[name], self.alpha[name], self.scaling[name] = r, alpha, alpha / r
        self.rank_dropout[name], self.module_dropout[name] = config.rank_dropout, config.module_dropout
        # LoHa always rescales the kept rows (peft); LoKr's config chooses.
        self.rank_dropout_scale[name] = getattr(config, "rank_dropout_scale", True)
        out_features, in_features = self.get_base_weight().shape
        self.create_factors(name, r, out_features, in_features, config)
        with torch.no_grad():
            self.init_factors(name, config.init_weights)

    def new_factor(self, *shape: int) -> nn.Parameter:
        """An uninitialised factor, in the adapters' compute dtype, on the base layer's device."""
        return nn.Parameter(torch.empty(shape, dtype=self.compute_dtype, device=self.base_device))

    def get_delta_weight(self, name: str) -> torch.Tensor:
        return self.unscaled_delta(name) * self.scaling[name]

    def forward_adapters(self, names, x, *args, **kwargs):
        result = self.base_layer(x, *args, **kwargs)
        for name in names:
            if self.training and self.module_dropout[name] and torch.rand(1).item() <= self.module_dropout[name]:
                continue                                   # module dropout: skip this adapter this step
            delta = self.get_delta_weight(name)
            if self.training and self.rank_dropout[name]:
                delta = delta * self.row_dropout_mask(name, delta)
            result = result + self.apply_matrix(x.to(delta.dtype), delta).to(result.dtype)
        return result

    def row_dropout_mask(self, name: str, delta: torch.Tensor) -> torch.Tensor:
        """(out, 1) for ΔW: 0 for each output row dropped, else 1 or 1 / (fraction of rows kept)."""
        rows = delta.shape[0]
        keep = (torch.rand(rows, device=delta.device) > self.rank_dropout[name]).to(delta.dtype)
        if self.rank_dropout_scale[name]:   # none kept: stays zero (peft would divide by zero)
            keep = keep / keep.mean().clamp_min(1 / rows)
        return keep[:, None]
