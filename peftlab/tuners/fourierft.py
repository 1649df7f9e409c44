"""FourierFT: Parameter-Efficient Fine-Tuning with Discrete Fourier Transform (Gao et al. 2024,
arXiv:2405.03003), as peft implements it.

LoRA trains the update ΔW in a low-rank basis. FourierFT trains it in the Fourier basis: a few
coefficients of ΔW's 2-D spectrum, at fixed random places, and ΔW is their inverse transform:

    F = 0 (out, in) except F[j_k, l_k] = c_k for k = 1..n        ΔW = Re(IDFT2(F)) · scaling
    y = W x + ΔW x + b

Each coefficient is a wave over the whole matrix, so n numbers (`n_frequency`) change every entry
of ΔW, and ΔW can have full rank; a layer trains n numbers whatever its shape (LoRA r: r·(in + out)).
The inverse DFT divides by out·in, hence the large `scaling` (peft's default 150).

The places: n distinct entries of the (out, in) grid, drawn uniformly by a random permutation of
out·in from a CPU generator seeded with `random_loc_seed` (peft's recipe). They are not saved: the
folder holds only the n coefficients (`fourierft_spectrum`, shape (n,)), and adapter_config.json's
random_loc_seed, with the layer's shape and n, draws the same places again on load, in peftlab as
in peft (for one torch version's randperm). One seed for every layer, so layers of one shape
share their places, as in the paper. `n_frequency_pattern` gives some layers their own n.

Init: init_weights=False (peft's default) draws the coefficients from N(0, 1), so the adapted
model does not start as the base model; init_weights=True starts them at zero (ΔW = 0).
Layers: nn.Linear and GPT-2's Conv1D, as peft (ΔW is built as (out, in) and merged through the
weight seam, tuners/layer.py). The update is additive, so forward, merge and unmerge are the
shared ones; unmerging subtracts ΔW again (exact up to rounding).
"""
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from .layer import BaseTunerLayer
from .layer_config import LayerMethodConfig, LayerSelection, pattern_value
from .layer_tuner import LayerTuner, record_fan_in_fan_out
from .lora_config import LORA_DEFAULT_TARGETS
from .registry import register_method

FOURIER_BIAS = ("none", "all", "fourier_only")


@dataclass
class FourierFTConfig(LayerSelection, LayerMethodConfig):
    """FourierFT, as `peft.FourierFTConfig`.

    n_frequency: trained coefficients per layer (at most out·in).   scaling: ΔW's scale.
    random_loc_seed: the seed the coefficients' places are drawn from.
    n_frequency_pattern: {pattern: n} for the modules whose name ends with the pattern.
    init_weights: False (peft's default) = coefficients ~ N(0, 1); True = zeros (the base model at the start).
    bias: "none", "all" or "fourier_only".   fan_in_fan_out: recorded for GPT-2's Conv1D.
    """
    peft_type: ClassVar[str] = "FOURIERFT"

    n_frequency: int = 1000
    scaling: float = 150.0
    random_loc_seed: int = 777
    fan_in_fan_out: bool = False
    bias: str = "none"
    n_frequency_pattern: dict = field(default_factory=dict)
    init_weights: bool = False

    def __post_init__(self):
        super().__post_init__()
        self.check_layer_selection(pattern_needs_layers=True)
        counts = [self.n_frequency, *self.n_frequency_pattern.values()]
        if any(not isinstance(n, int) or isinstance(n, bool) or n <= 0 for n in counts):
            raise ValueError(f"n_frequency (and every n_frequency_pattern value) must be a positive integer, "
                             f"got {counts}.")
        if self.bias not in FOURIER_BIAS:
            raise ValueError(f"bias must be one of {', '.join(map(repr, FOURIER_BIAS))}, got {self.bias!r}.")


def spectral_indices(out_features: int, in_features: int, n_frequency: int, seed: int) -> torch.Tensor:
    """(2, n): rows and columns of the spectrum entries that train, peft's draw: the first n of a
    random permutation of the out·in entries (row-major), from a CPU generator seeded with `seed`."""
    flat = torch.randperm(out_features * in_features, generator=torch.Generator().manual_seed(seed))[:n_frequency]
    return torch.stack([flat // in_features, flat % in_features])


class FourierFTLayer(BaseTunerLayer):
    """FourierFT around nn.Linear or Conv1D: n spectral coefficients per adapter, ΔW their inverse DFT."""
    adapter_layer_names = ("fourierft_spectrum",)
    other_param_names = ("fourierft_n_frequency", "fourierft_scaling", "fourierft_random_loc_seed", "indices")

    def __init__(self, base_layer: nn.Module, module_name: str = ""):
        super().__init__(base_layer, module_name)
        self.fourierft_spectrum = nn.ParameterDict()
        self.fourierft_n_frequency: dict[str, int] = {}
        self.fourierft_scaling: dict[str, float] = {}
        self.fourierft_random_loc_seed: dict[str, int] = {}
        self.indices: dict[str, torch.Tensor] = {}
        self.out_in = tuple(self.get_base_weight().shape)   # ΔW's shape, (out, in)

    def update_layer(self, name: str, config: FourierFTConfig) -> None:
        out_features, in_features = self.out_in
        n = pattern_value(config.n_frequency_pattern, self.module_name, config.n_frequency)
        if n > out_features * in_features:
            raise ValueError(f"n_frequency={n} is more than the {out_features} x {in_features} = "
                             f"{out_features * in_features} entries of {self.module_name or 'this layer'}'s spectrum; "
                             "use at most that many (or give this layer its own in n_frequency_pattern).")
        self.fourierft_n_frequency[name], self.fourierft_scaling[name] = n, config.scaling
        self.fourierft_random_loc_seed[name] = config.random_loc_seed
        self.indices[name] = spectral_indices(out_features, in_features, n, config.random_loc_seed)
        where = {"dtype": self.compute_dtype, "device": self.base_device}
        coefficients = torch.zeros(n, **where) if config.init_weights else torch.randn(n).to(**where)
        self.fourierft_spectrum[name] = nn.Parameter(coefficients)

    def get_delta_weight(self, name: str) -> torch.Tensor:
        coefficients = self.fourierft_spectrum[name]                              # (n,)
        rows, cols = self.indices[name].to(coefficients.device)
        spectrum = coefficients.new_zeros(self.out_in)                              # (out, in), n entries set
        spectrum = spectrum.index_put((rows, cols), coefficients)
        return torch.fft.ifft2(spectrum).real * self.fourierft_scaling[name]     # (out, in)


@register_method
class FourierFTModel(LayerTuner):
    """FourierFT's tuner: linear layers; default targets are peft's (LoRA's, but GPT-2's mlp.c_proj)."""
    config_class = FourierFTConfig
    layers = {nn.Linear: FourierFTLayer, Conv1D: FourierFTLayer}
    default_targets = {**LORA_DEFAULT_TARGETS, "gpt2": ["mlp.c_proj"]}

    def prepare_config(self, config):
        record_fan_in_fan_out(self, config)
