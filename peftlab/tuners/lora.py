"""LoRA: low-rank adaptation (Hu et al. 2021, arXiv:2106.09685), with rsLoRA, DoRA and PiSSA.

A frozen weight W (out, in) gets a trainable low-rank update:

    y = W x + s * B A x        A: (r, in), B: (out, r), r << min(in, out)

Only A and B train: r * (in + out) numbers instead of in * out. B starts at zero, so the
adapted model starts exactly as the base model. The scale s = lora_alpha / r is meant to
spare retuning the learning rate when r changes (Hu et al., section 4.1); rsLoRA
(Kalajdzievski 2023, arXiv:2312.03732) shows that with 1 / r larger ranks learn ever more
slowly, and that s = lora_alpha / sqrt(r) keeps learning stable across ranks (`use_rslora`).

Wrappers (names and weight layout as in `peft`, so adapters load in both):
- LoraLinear for nn.Linear, GPT-2's Conv1D (which stores W transposed, as (in, out)) and the 4-bit
  Linear4bit of peftlab/nf4.py (QLoRA);
  `lora_A[name]` is an nn.Linear(in, r), `lora_B[name]` an nn.Linear(r, out).
- LoraConv for nn.Conv1d, nn.Conv2d, nn.Conv3d: the kernel read as an (out, in*k*k) matrix
  (tuners/conv.py); `lora_A[name]` is a convolution with the base's kernel size, stride, padding and
  dilation and r output channels, `lora_B[name]` a 1x1 convolution from r channels to out.
- LoraEmbedding for nn.Embedding: an embedding is a linear map of a one-hot token, so the same
  A (r, vocab) and B (dim, r) apply; A is read by row lookup. peft names them
  `lora_embedding_A` / `lora_embedding_B` and, there, starts A at zero and B random.
The config (LoraConfig) and the default targets: tuners/lora_config.py.
Variants change the forward and the merge of one adapter: DoRA (tuners/dora.py). PiSSA
(tuners/pissa.py) changes only the initialisation.

Dtypes: for fp16/bf16 bases the adapter weights and the adapter's arithmetic are fp32 (see
`layer.compute_dtype`); the sum is cast back to the base output's dtype.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from peftlab.nf4 import Linear4bit

from . import pissa
from .conv import CONV_TYPES, check_conv
from .dora import DoraVariant
from .layer import BaseTunerLayer
from .layer_config import pattern_value
from .layer_tuner import LayerTuner, record_fan_in_fan_out
from .lora_config import LORA_DEFAULT_TARGETS, LoraConfig
from .lora_merging import add_weighted_adapter
from .registry import register_method


class LoraLayer(BaseTunerLayer):
    """What LoRA's wrappers share: per-adapter rank, scale, dropout, variant; forward and merge."""
    other_param_names = ("r", "lora_alpha", "scaling", "lora_dropout", "lora_variant", "dora_merge_norm")

    def __init__(self, base_layer: nn.Module, module_name: str = ""):
        super().__init__(base_layer, module_name)
        self.r, self.lora_alpha, self.scaling, self.lora_variant = {}, {}, {}, {}
        self.dora_merge_norm: dict[str, torch.Tensor] = {}   # DoRA: ||W + s B A|| when merged
        self.lora_dropout = nn.ModuleDict()

    # A subclass stores the factors, says how to read them as matrices, and runs them.
    def A(self, name: str) -> torch.Tensor:     # (r, in)
        raise NotImplementedError

    def B(self, name: str) -> torch.Tensor:     # (out, r)
        raise NotImplementedError

    def lora_input(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """What the factors read: x in the compute dtype, after dropout (ids for an embedding)."""
        raise NotImplementedError

    def lora_output(self, name: str, x_in: torch.Tensor) -> torch.Tensor:
        """B A x_in, unscaled, without forming B A."""
        raise NotImplementedError

    def sees_base_input(self, name: str) -> bool:
        """Do the factors read exactly what the base layer read (no dropout at work)?"""
        return True

    def create_factors(self, name: str, r: int, in_features: int, out_features: int, dtype, device) -> None:
        """Create adapter `name`'s A (r, in) and B (out, r), uninitialised, in this layer's layout."""
        raise NotImplementedError

    def init_factors(self, name: str, init) -> None:
        """Initialise A and B as `init` (a value of LoraConfig.init_lora_weights) says."""
        raise NotImplementedError

    def magnitude_shape(self, out_features: int) -> tuple[int, ...]:
        """The shape DoRA's magnitude vector is stored (and saved) in, peft's layout."""
        return (out_features,)

    def update_layer(self, name: str, config) -> None:
        r = pattern_value(config.rank_pattern, self.module_name, config.r)
        alpha = pattern_value(config.alpha_pattern, self.module_name, config.lora_alpha)
        self.r[name], self.lora_alpha[name] = r, alpha
        self.scaling[name] = alpha / (math.sqrt(r) if config.use_rslora else r)
        p = config.lora_dropout
        self.lora_dropout[name] = nn.Dropout(p) if p > 0 else nn.Identity()
        out_features, in_features = self.get_base_weight().shape
        self.create_factors(name, r, in_features, out_features, self.compute_dtype, self.base_device)
        with torch.no_grad():
            self.init_factors(name, config.init_lora_weights)
        if config.use_dora:   # after the init: PiSSA changes W, and m must match W + s B A
            self.lora_variant[name] = DoraVariant
            DoraVariant.init(self, name)

    def get_delta_weight(self, name: str) -> torch.Tensor:
        return self.scaling[name] * (self.B(name) @ self.A(name))            # (out, in)

    def forward_adapters(self, names, x, *args, **kwargs):
        result = self.base_layer(x, *args, **kwargs)
        out_dtype = result.dtype
        for name in names:
            x_in = self.lora_input(name, x)
            lora = self.lora_output(name, x_in)                               # (..., out)
            variant = self.lora_variant.get(name)
            if variant is None:   # result + s * lora in one op; fp32 if the base is bf16
                result = torch.add(result, lora, alpha=self.scaling[name])
            else:
                result = variant.forward(self, name, x_in, result, lora)
        return result.to(out_dtype)

    def merge_weights(self, name, weight, bias):
        variant = self.lora_variant.get(name)
        if variant is None:
            return super().merge_weights(name, weight, bias)
        return variant.merge(self, name, weight), bias

    def unmerge_weights(self, name, weight, bias):
        variant = self.lora_variant.get(name)
        if variant is None:
            return super().unmerge_weights(name, weight, bias)
        return variant.unmerge(self, name, weight), bias


class LoraLinear(LoraLayer):
    """LoRA around nn.Linear (weight (out, in)) or transformers' Conv1D (weight (in, out))."""
    adapter_layer_names = ("lora_A", "lora_B", "lora_magnitude_vector")

    def __init__(self, base_layer: nn.Module, module_name: str = ""):
        super().__init__(base_layer, module_name)
        self.lora_A, self.lora_B = nn.ModuleDict(), nn.ModuleDict()
        self.lora_magnitude_vector = nn.ParameterDict()   # DoRA's m, one (out,) vector per adapter
        self.pissa_adapter = None     # set when PiSSA rewrote the base weight (tuners/pissa.py)

    def A(self, name):
        return self.lora_A[name].weight

    def B(self, name):
        return self.lora_B[name].weight

    def lora_input(self, name, x):
        return self.lora_dropout[name](x.to(self.lora_A[name].weight.dtype))   # (..., in)

    def lora_output(self, name, x_in):
        return self.lora_B[name](self.lora_A[name](x_in))                   # (..., out)

    def sees_base_input(self, name):
        return isinstance(self.lora_dropout[name], nn.Identity) or not self.training

    def create_factors(self, name, r, in_features, out_features, dtype, device):
        self.lora_A[name] = nn.Linear(in_features, r, bias=False, dtype=dtype, device=device)
        self.lora_B[name] = nn.Linear(r, out_features, bias=False, dtype=dtype, device=device)

    def init_factors(self, name, init):
        if init == "pissa":      # A and B from W's top singular vectors; W keeps the rest
            pissa.init(self, name)
            return
        A, B = self.A(name), self.B(name)
        if init == "gaussian":
            nn.init.normal_(A, std=1 / self.r[name])
        else:                    # True and False: nn.Linear's own init for A
            nn.init.kaiming_uniform_(A, a=math.sqrt(5))
        if init is False:        # B random too: the adapter acts from the start (tests)
            nn.init.kaiming_uniform_(B, a=math.sqrt(5))
        else:                    # B = 0: the update starts at zero
            nn.init.zeros_(B)

    def base_forward(self, x, *args, **kwargs):
        return pissa.original_output(self, x, self.base_layer(x, *args, **kwargs))

    def restore_base_weight(self):
        pissa.restore_base_weight(self)

    def delete(self, name):
        if name == self.pissa_adapter:
            pissa.restore_base_weight(self)
        super().delete(name)


class LoraConv(LoraLinear):
    """LoRA around a convolution, in peft's layout: A a convolution with the base's kernel, stride,
    padding and dilation into r channels, B a 1x1 convolution from r channels to out. Read as
    matrices, A is (r, in*k*k) and B (out, r), so ΔW = s B A is a change of the kernel and the
    rest of LoRA (scaling, merging, DoRA) is the linear layer's. Grouped convolutions and padding
    modes other than zeros are refused (tuners/conv.py says why).

    peft 0.21 builds A without the base's dilation, so on a dilated convolution its adapter output has
    the wrong size (an error) or, where sizes happen to agree, is not what its own merge computes;
    peftlab's A has the base's dilation. The saved tensors are the same either way.
    """

    def __init__(self, base_layer: nn.Module, module_name: str = ""):
        check_conv(base_layer, "LoRA", module_name or type(base_layer).__name__)
        super().__init__(base_layer, module_name)

    def A(self, name):
        return self.lora_A[name].weight.flatten(1)                             # (r, in*k*k), a view

    def B(self, name):
        return self.lora_B[name].weight.flatten(1)                             # (out, r), a view

    def create_factors(self, name, r, in_features, out_features, dtype, device):
        base, conv = self.base_layer, type(self.base_layer)
        ones = (1,) * (base.weight.dim() - 2)
        self.lora_A[name] = conv(base.in_channels, r, base.kernel_size, base.stride, base.padding, base.dilation,
                                 bias=False, dtype=dtype, device=device)
        self.lora_B[name] = conv(r, base.out_channels, ones, ones, bias=False, dtype=dtype, device=device)

    def init_factors(self, name, init):
        if init == "pissa":   # peft refuses it on convolutions too
            raise ValueError(f"PiSSA is implemented for Linear and Conv1D layers only (as in peft); {self.module_name} "
                             "is a convolution: leave it out of target_modules or use another init_lora_weights.")
        super().init_factors(name, init)

    def magnitude_shape(self, out_features):
        return (1, out_features) + (1,) * (self.base_layer.weight.dim() - 2)    # (1, out, 1, 1) for Conv2d


class LoraEmbedding(LoraLayer):
    """LoRA around nn.Embedding: the update s B A is a (dim, vocab) matrix, A is looked up.

    No dropout on this path (as in peft): dropping entries of a one-hot input is meaningless.
    """
    adapter_layer_names = ("lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector")

    def __init__(self, base_layer: nn.Embedding, module_name: str = ""):
        super().__init__(base_layer, module_name)
        self.lora_embedding_A, self.lora_embedding_B = nn.ParameterDict(), nn.ParameterDict()
        self.lora_magnitude_vector = nn.ParameterDict()   # DoRA's m, one (dim,) vector per adapter

    def A(self, name):
        return self.lora_embedding_A[name]

    def B(self, name):
        return self.lora_embedding_B[name]

    def lora_input(self, name, x):
        return x                                                              # token ids

    def lora_output(self, name, ids):
        # Row lookup of A^T is A @ one_hot(x); padding_idx keeps the padding token's column fixed.
        after_A = F.embedding(ids, self.A(name).T, padding_idx=self.base_layer.padding_idx)   # (..., r)
        return after_A @ self.B(name).T                                                        # (..., dim)

    def create_factors(self, name, r, in_features, out_features, dtype, device):
        self.lora_embedding_A[name] = nn.Parameter(torch.empty(r, in_features, dtype=dtype, device=device))
        self.lora_embedding_B[name] = nn.Parameter(torch.empty(out_features, r, dtype=dtype, device=device))

    def init_factors(self, name, init):
        if init == "pissa":
            raise ValueError("PiSSA is implemented for Linear and Conv1D layers only (as in peft); "
                             "remove the embedding from target_modules or use another init.")
        if init is False:
            nn.init.normal_(self.A(name))
        else:   # True and "gaussian": peft's embedding init, A = 0 and B ~ N(0, 1)
            nn.init.zeros_(self.A(name))
        nn.init.normal_(self.B(name))


@register_method
class LoraModel(LayerTuner):
    """LoRA's tuner: what it wraps, its default targets, its rules for a new adapter."""
    config_class = LoraConfig
    # Linear4bit: QLoRA, LoRA on a frozen NF4 base (peftlab/nf4.py), read through the base-weight seam.
    layers = {nn.Linear: LoraLinear, Conv1D: LoraLinear, Linear4bit: LoraLinear, nn.Embedding: LoraEmbedding,
              **dict.fromkeys(CONV_TYPES, LoraConv)}
    all_linear = (nn.Linear, Conv1D, Linear4bit)
    default_targets = LORA_DEFAULT_TARGETS

    def prepare_config(self, config):
        record_fan_in_fan_out(self, config)

    def rewrites_base_weights(self, config):
        return config.init_lora_weights == "pissa"

    # Combining adapters (linear, cat, SVD, TIES, DARE): tuners/lora_merging.py.
    add_weighted_adapter = add_weighted_adapter

    def check_new_adapter(self, config):
        configs = [config, *self.peft_config.values()]
        if len(configs) > 1 and any(self.rewrites_base_weights(c) for c in configs):
            raise ValueError("An adapter whose init rewrites the base weights (PiSSA) cannot share a model "
                             "with other adapters: they would see the rewritten base (peft refuses too).")
