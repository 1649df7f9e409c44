"""LoRA: low-rank adaptation (Hu et al. 2021, arXiv:2106.09685), with rsLoRA, DoRA and PiSSA.

A frozen weight W (out, in) gets a trainable low-rank update:

    y = W x + s * B A x        A: (r, in), B: (out, r), r << min(in, out)

Only A and B train: r * (in + out) numbers instead of in * out. B starts at zero, so the
adapted model starts exactly as the base model. The scale s = lora_alpha / r is meant to
spare retuning the learning rate when r changes (Hu et al., section 4.1); rsLoRA
(Kalajdzievski 2023, arXiv:2312.03732) shows that with 1 / r larger ranks learn ever more
slowly, and that s = lora_alpha / sqrt(r) keeps learning stable across ranks (`use_rslora`).

Wrappers (names and weight layout as in `peft`, so adapters load in both):
- LoraLinear for nn.Linear and GPT-2's Conv1D (which stores W transposed, as (in, out));
  `lora_A[name]` is an nn.Linear(in, r), `lora_B[name]` an nn.Linear(r, out).
- LoraEmbedding for nn.Embedding: an embedding is a linear map of a one-hot token, so the same
  A (r, vocab) and B (dim, r) apply; A is read by row lookup. peft names them
  `lora_embedding_A` / `lora_embedding_B` and, there, starts A at zero and B random.
DoRA's arithmetic is in tuners/dora.py; PiSSA's initialisation is `LoraLinear.pissa_init`.

Dtypes: for fp16/bf16 bases the adapter weights and the adapter's arithmetic are fp32 (see
`base.compute_dtype`); the adapter's output is cast to the base output's dtype before adding.
"""
import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from . import dora
from .base import AdapterLayer, compute_dtype, register_layer_method


class LoraLayer(AdapterLayer):
    """What LoRA's wrappers share: per-adapter rank, scale, init, DoRA magnitude, merging."""
    other_adapter_dicts = ("r", "lora_alpha", "scaling", "use_dora", "lora_dropout")

    def __init__(self, base_layer: nn.Module, transposed: bool):
        super().__init__(base_layer, transposed)
        self.r, self.lora_alpha, self.scaling, self.use_dora = {}, {}, {}, {}
        self.lora_dropout = nn.ModuleDict()

    # A subclass stores the factors and says how to read them as matrices.
    def A(self, name: str) -> torch.Tensor:     # (r, in)
        raise NotImplementedError

    def B(self, name: str) -> torch.Tensor:     # (out, r)
        raise NotImplementedError

    def update_layer(self, name: str, config) -> None:
        r = config.r
        self.r[name], self.lora_alpha[name], self.use_dora[name] = r, config.lora_alpha, config.use_dora
        self.scaling[name] = config.lora_alpha / (math.sqrt(r) if config.use_rslora else r)
        p = config.lora_dropout
        self.lora_dropout[name] = nn.Dropout(p) if p > 0 else nn.Identity()
        out_features, in_features = self.weight_matrix().shape
        weight = self.base_layer.weight
        self.create_factors(name, r, in_features, out_features, compute_dtype(weight), weight.device)
        with torch.no_grad():
            self.init_factors(name, config.init_lora_weights)
            if config.use_dora:   # after the init: PiSSA changes W, and m must match W + s B A
                W = self.weight_matrix().to(compute_dtype(weight))
                m = dora.initial_magnitude(W, self.delta_weight(name))              # (out,)
                self.lora_magnitude_vector[name] = nn.Parameter(m)

    def delta_weight(self, name: str) -> torch.Tensor:
        return self.scaling[name] * (self.B(name) @ self.A(name))            # (out, in)

    def merged_weight(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        if self.use_dora[name]:
            return dora.merged_weight(self.lora_magnitude_vector[name], weight, self.delta_weight(name))
        return weight + self.delta_weight(name)

    def _add(self, name: str, result: torch.Tensor, lora: torch.Tensor, base_out) -> torch.Tensor:
        """result + the adapter's contribution (plain LoRA, or DoRA given base_out() = W x)."""
        if self.use_dora[name]:
            weight = self.weight_matrix().to(lora.dtype)
            with torch.no_grad():   # only the detached norm uses s B A: build no graph for it
                delta = self.delta_weight(name)
            lora = dora.dora_delta(self.lora_magnitude_vector[name], weight, delta, base_out(), lora)
        return result + lora.to(result.dtype)


class LoraLinear(LoraLayer):
    """LoRA around nn.Linear (weight (out, in)) or transformers' Conv1D (weight (in, out))."""
    adapter_param_names = ("lora_A", "lora_B", "lora_magnitude_vector")

    def __init__(self, base_layer: nn.Module):
        super().__init__(base_layer, transposed=isinstance(base_layer, Conv1D))
        self.lora_A, self.lora_B = nn.ModuleDict(), nn.ModuleDict()
        self.lora_magnitude_vector = nn.ParameterDict()   # DoRA's m, one (out,) vector per adapter
        self.pissa_adapter = None     # set when PiSSA rewrote the base weight (see pissa_init)

    def A(self, name):
        return self.lora_A[name].weight

    def B(self, name):
        return self.lora_B[name].weight

    def update_layer(self, name, config):
        # The layer type tells how W is stored; fan_in_fan_out only records it for peft.
        if self.transposed and not config.fan_in_fan_out:
            config.fan_in_fan_out = True    # as peft does, so the saved config says the truth
        elif config.fan_in_fan_out and not self.transposed:
            warnings.warn("fan_in_fan_out=True is ignored for nn.Linear, which stores W as (out, in).")
        super().update_layer(name, config)

    def create_factors(self, name, r, in_features, out_features, dtype, device):
        self.lora_A[name] = nn.Linear(in_features, r, bias=False, dtype=dtype, device=device)
        self.lora_B[name] = nn.Linear(r, out_features, bias=False, dtype=dtype, device=device)

    def init_factors(self, name, init):
        A, B = self.A(name), self.B(name)
        if init == "pissa":
            return self.pissa_init(name)
        if init is True:         # nn.Linear's own init for A; B = 0 makes the update start at 0
            nn.init.kaiming_uniform_(A, a=math.sqrt(5))
        elif init == "gaussian":
            nn.init.normal_(A, std=1 / self.r[name])
        else:                    # False: both random, the adapter acts from the start (tests)
            nn.init.kaiming_uniform_(A, a=math.sqrt(5))
            nn.init.kaiming_uniform_(B, a=math.sqrt(5))
            return
        nn.init.zeros_(B)

    def pissa_init(self, name: str) -> None:
        """PiSSA (Meng et al. 2024, arXiv:2404.02948): start from W's principal components.

        With the SVD W = U S V^T (out, in), the top r singular triples become the adapter,
        s B A = U_r S_r V_r^T, and the base weight is *rewritten* to the residual
        W - s B A, so the model's output is unchanged at init but training now moves the
        directions that matter most. Because the base weight changed, we keep A0, B0 (the
        initial factors) to give the original W back: `disable_adapter` adds s B0 A0 x to the
        output, `unload` and `delete_adapter` write W back (up to float rounding), and
        merging needs nothing special (residual + s B A is the trained weight).
        """
        weight = self.base_layer.weight
        W = self.weight_matrix().to(compute_dtype(weight))           # (out, in)
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)          # (out, k), (k,), (k, in)
        r, s = self.r[name], self.scaling[name]
        root = (S[:r] / s).sqrt()                                     # so that s * B A = U_r S_r V_r^T
        B, A = U[:, :r] * root, root[:, None] * Vh[:r]                # (out, r), (r, in)
        self.A(name).copy_(A)
        self.B(name).copy_(B)
        residual = W - s * B @ A
        weight.copy_((residual.T if self.transposed else residual).to(weight.dtype))
        self.register_buffer("pissa_A0", A.clone(), persistent=False)
        self.register_buffer("pissa_B0", B.clone(), persistent=False)
        self.pissa_adapter, self.pissa_scaling = name, s

    def restore_base(self, x, result):
        if self.pissa_adapter is None:
            return result
        principal = F.linear(F.linear(x.to(self.pissa_A0.dtype), self.pissa_A0), self.pissa_B0)
        return result + (self.pissa_scaling * principal).to(result.dtype)

    @torch.no_grad()
    def restore_base_weight(self):
        if self.pissa_adapter is not None:
            weight = self.base_layer.weight
            W = self.weight_matrix().to(compute_dtype(weight))
            W = W + self.pissa_scaling * self.pissa_B0 @ self.pissa_A0          # residual + principal part
            weight.copy_((W.T if self.transposed else W).to(weight.dtype))
            del self.pissa_A0, self.pissa_B0
            self.pissa_adapter = None

    def delete(self, name):
        if name == self.pissa_adapter:
            self.restore_base_weight()
        super().delete(name)

    def add_adapter_output(self, name, x, result):
        x = self.lora_dropout[name](x.to(self.A(name).dtype))                 # (..., in)
        lora = self.lora_B[name](self.lora_A[name](x)) * self.scaling[name]   # (..., out)

        def base_out():   # W x without bias, on the same (dropped-out) input as the adapter
            if isinstance(self.lora_dropout[name], nn.Identity) or not self.training:
                bias = self.base_layer.bias
                # No bias: reuse `result` itself. Subtracting 0 would allocate a copy that autograd
                # keeps for the backward pass: one extra activation per DoRA layer.
                if bias is None:
                    return result.to(lora.dtype)
                return result.to(lora.dtype) - bias.to(lora.dtype)
            return F.linear(x, self.weight_matrix().to(x.dtype))
        return self._add(name, result, lora, base_out)


class LoraEmbedding(LoraLayer):
    """LoRA around nn.Embedding: the update s B A is a (dim, vocab) matrix, A is looked up.

    No dropout on this path (as in peft): dropping entries of a one-hot input is meaningless.
    """
    adapter_param_names = ("lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector")

    def __init__(self, base_layer: nn.Embedding):
        super().__init__(base_layer, transposed=True)   # stored (vocab, dim) = (in, out)
        self.lora_embedding_A, self.lora_embedding_B = nn.ParameterDict(), nn.ParameterDict()
        self.lora_magnitude_vector = nn.ParameterDict()   # DoRA's m, one (dim,) vector per adapter

    def A(self, name):
        return self.lora_embedding_A[name]

    def B(self, name):
        return self.lora_embedding_B[name]

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

    def add_adapter_output(self, name, x, result):
        # Row lookup of A^T is A @ one_hot(x); padding_idx keeps the padding token's column fixed.
        after_A = F.embedding(x, self.A(name).T, padding_idx=self.base_layer.padding_idx)   # (..., r)
        lora = after_A @ self.B(name).T * self.scaling[name]                                  # (..., dim)
        return self._add(name, result, lora, lambda: result.to(lora.dtype))


register_layer_method("LORA", {nn.Linear: LoraLinear, Conv1D: LoraLinear, nn.Embedding: LoraEmbedding})
