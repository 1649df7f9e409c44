"""The layer contract: what a layer-wrapping method (LoRA, IA3, ...) writes, and what it gets for free.

A method replaces each targeted layer by a wrapper that keeps the original as `base_layer` and
adds per-adapter tensors in dicts keyed by adapter name, exactly like peft, so state-dict keys
match: `...q_proj.base_layer.weight`, `...q_proj.lora_A.default.weight`.

What a method writes (a subclass of BaseTunerLayer):
- the dicts it stores, by role (see wrapper.AdapterWrapper): `adapter_layer_names` (trained),
  `saved_frozen_names` (frozen but saved), `other_param_names` (rank, scaling...);
- `update_layer(adapter_name, config)`: create one adapter. `self.module_name` says where the
  layer sits ("model.layers.0.mlp.down_proj"), for per-module choices;
- an *additive* method, y = base(x) + ΔW x (+ Δb), writes `get_delta_weight` (ΔW as an (out, in)
  matrix) and, if it moves the bias, `get_delta_bias`. Forward, merge and unmerge follow. It may
  override `adapter_output` with a cheaper way to compute ΔW x (LoRA: B (A x), never B A);
- any other method overrides `forward_adapters` (IA3 rescales, DoRA renormalises) and, if it can
  be merged, `merge_weights` / `unmerge_weights`. `mergeable = False` refuses merging with a
  clear error (bottleneck adapters).

The base weight is read and written through one seam, `get_base_weight` / `set_base_weight`,
as the (out, in) matrix of y = W x whatever the storage: nn.Linear keeps (out, in), GPT-2's
Conv1D keeps (in, out), nn.Embedding keeps (vocab, dim), a linear map of a one-hot input stored
transposed, and a convolution keeps a kernel (out, in, k1, k2...), read as the matrix
(out, in*k1*k2...) that it applies to every patch (tuners/conv.py). A base layer that keeps no
float `.weight` (a packed 4-bit layer) plugs in by defining `dequantize()` -> the (out, in) matrix
and `compute_dtype`; writing a weight into it (merging) replaces it by an nn.Linear holding the
float result. Merging, DoRA's norm, PiSSA's
SVD all go through the seam, so every method works on such a base unchanged.
"""
import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from .conv import convolve, is_conv, per_channel
from .tuner import compute_dtype
from .wrapper import AdapterWrapper, route_rows

__all__ = ["BaseTunerLayer"]


class BaseTunerLayer(AdapterWrapper):
    """A base layer plus any number of named adapters of one method (see the module docstring)."""
    _inner = "base_layer"
    mergeable = True

    def __init__(self, base_layer: nn.Module, module_name: str = ""):
        super().__init__()
        self.base_layer = base_layer
        self.module_name = module_name                  # where this layer sits in the model
        # Is W stored as (in, out)? Conv1D and nn.Embedding are; nn.Linear is not.
        self.transposed = isinstance(base_layer, (Conv1D, nn.Embedding))
        self.merged_adapters: list[str] = []            # folded into the base weight right now

    # --- what a method implements ---------------------------------------------------------
    def update_layer(self, adapter_name: str, config) -> None:
        raise NotImplementedError

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        """An additive adapter's update of the base weight, (out, in), in the compute dtype."""
        raise NotImplementedError(f"{type(self).__name__} is not additive: it overrides forward_adapters "
                                  "and merge_weights instead of defining get_delta_weight.")

    def get_delta_bias(self, adapter_name: str) -> torch.Tensor | None:
        """An additive adapter's update of the bias, (out,), or None (most methods leave it)."""
        return None

    def adapter_output(self, adapter_name: str, x: torch.Tensor) -> torch.Tensor:
        """ΔW x (+ Δb) for input x, in the compute dtype. Default: from get_delta_weight."""
        x = x.to(self.compute_dtype)
        delta_bias = self.get_delta_bias(adapter_name)
        return self.apply_matrix(x, self.get_delta_weight(adapter_name), delta_bias)

    def forward_adapters(self, names: list[str], x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """The layer's output with adapters `names` applied. Default: the additive rule."""
        result = self.base_layer(x, *args, **kwargs)
        for name in names:
            result = result + self.adapter_output(name, x).to(result.dtype)
        return result

    def merge_weights(self, adapter_name: str, weight: torch.Tensor, bias: torch.Tensor | None):
        """(W, b) with the adapter folded in: (out, in) and (out,) or None. Default: additive."""
        delta_bias = self.get_delta_bias(adapter_name)
        if delta_bias is not None and bias is None:
            raise ValueError(f"{self.module_name} has no bias to merge the adapter's bias update into.")
        return weight + self.get_delta_weight(adapter_name), bias if delta_bias is None else bias + delta_bias

    def unmerge_weights(self, adapter_name: str, weight: torch.Tensor, bias: torch.Tensor | None):
        """The inverse of merge_weights (exact in exact arithmetic; floats round)."""
        delta_bias = self.get_delta_bias(adapter_name)
        return weight - self.get_delta_weight(adapter_name), bias if delta_bias is None else bias - delta_bias

    def base_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """The *original* base layer's output. Differs from base_layer(x) only when an init
        rewrote the base weight (PiSSA), which then overrides this."""
        return self.base_layer(x, *args, **kwargs)

    def restore_base_weight(self) -> None:
        """Undo any change an init made to the base weight (PiSSA), before unwrapping."""

    # --- the base weight seam --------------------------------------------------------------
    @property
    def base_dtype(self) -> torch.dtype:
        """The base's float dtype: a packed layer says it; otherwise its weight's (or, for a
        block such as an attention module, its first parameter's)."""
        declared = getattr(self.base_layer, "compute_dtype", None)
        if declared is not None:
            return declared
        weight = getattr(self.base_layer, "weight", None)
        return (weight if weight is not None else next(self.base_layer.parameters())).dtype

    @property
    def compute_dtype(self) -> torch.dtype:
        return compute_dtype(self.base_dtype)

    @property
    def base_device(self) -> torch.device:
        return next(self.base_layer.parameters(), None).device

    def get_base_weight(self) -> torch.Tensor:
        """W as the (out, in) matrix of y = W x, in the compute dtype (a view when no conversion
        is needed: never modify it in place)."""
        layer = self.base_layer
        if hasattr(layer, "dequantize"):   # a packed base: it knows how to give W back
            return layer.dequantize().to(self.compute_dtype)
        w = layer.weight.T if self.transposed else layer.weight
        if is_conv(layer):                 # the kernel (out, in, k...) as the matrix (out, in*k...)
            w = w.flatten(1)
        return w.to(self.compute_dtype)

    def get_base_bias(self) -> torch.Tensor | None:
        bias = getattr(self.base_layer, "bias", None)
        return None if bias is None else bias.to(self.compute_dtype)

    @torch.no_grad()
    def set_base_weight(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """Write the (out, in) matrix `weight` (and `bias`, if given) into the base layer."""
        layer = self.base_layer
        if hasattr(layer, "dequantize"):   # merging into a packed base gives a float layer
            out_features, in_features = weight.shape
            plain = nn.Linear(in_features, out_features, bias=layer.bias is not None,
                              dtype=weight.dtype, device=weight.device)
            plain.weight.copy_(weight)
            if layer.bias is not None:
                plain.bias.copy_(layer.bias)
            self.base_layer = layer = plain
        target = layer.weight
        target.copy_((weight.T if self.transposed else weight).view(target.shape).to(target.dtype))
        if bias is not None:
            layer.bias.copy_(bias.to(layer.bias.dtype))

    def apply_matrix(self, x: torch.Tensor, matrix: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """y = M x (+ b) for an (out, in) matrix M, on this layer's kind of input."""
        if isinstance(self.base_layer, nn.Embedding):   # x holds token ids: M x is a column lookup
            return F.embedding(x, matrix.T, padding_idx=self.base_layer.padding_idx)
        if is_conv(self.base_layer):                    # M applied to every patch: a convolution
            return convolve(self.base_layer, x, matrix, bias)
        return F.linear(x, matrix, bias)

    def per_output(self, vector: torch.Tensor) -> torch.Tensor:
        """An (out,) vector shaped to broadcast over this layer's output: (..., out) for a linear
        layer, (N, out, *spatial) for a convolution."""
        return per_channel(self.base_layer, vector) if is_conv(self.base_layer) else vector

    # --- forward ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if self.disabled:
            return self.base_forward(x, *args, **kwargs)
        if self.merged_adapters:            # the adapters are already inside the base weight
            if self.training and torch.is_grad_enabled() and self._merged_adapter_trains():
                # Merged, the adapter's own tensors are not on the forward path: a training step would
                # give them no gradient and change nothing, silently.
                raise RuntimeError(f"{self.module_name or type(self).__name__}: adapter(s) "
                                   f"{', '.join(self.merged_adapters)} are merged into the base weights, so training "
                                   "would not reach them. Call model.unmerge_adapter() to train, or model.eval() "
                                   "(or torch.no_grad()) to run the merged model.")
            return self.base_layer(x, *args, **kwargs)
        if self.batch_adapter_names is not None:
            return route_rows(self.batch_adapter_names, x, lambda name, rows: (
                self.forward_adapters([name], rows, *args, **kwargs) if name in self
                else self.base_forward(rows, *args, **kwargs)))   # "__base__", or not adapted here
        names = self.running_adapters()
        if not names:
            return self.base_forward(x, *args, **kwargs)
        return self.forward_adapters(names, x, *args, **kwargs)

    def _merged_adapter_trains(self) -> bool:
        return any(t.requires_grad for name in self.merged_adapters for t in self.trainable_tensors(name).values())

    # --- merging ---------------------------------------------------------------------------
    @torch.no_grad()
    def merge(self, adapter_names: list[str], exact_unmerge: bool = False) -> None:
        """Fold adapters into the base weight: the forward then costs what the base costs.

        Idempotent: an adapter already merged is skipped. By default nothing else is kept, and
        `unmerge` subtracts the update again (as peft does), which leaves float rounding errors
        (about 1e-7 relative in fp32, 1e-2 in bf16). `exact_unmerge=True` keeps a copy of the
        base weight and bias instead, so unmerging restores them bit for bit; the copy costs as
        much memory as the merged weights themselves. A packed base is always kept: merging
        replaces it by a float layer, and unmerging puts the packed layer back, for the price of
        its 4-bit storage.
        """
        if not self.mergeable:
            raise ValueError(f"{type(self).__name__} adapters cannot be merged into the base weights: the "
                             "adapter is a function of its own, not a change of W. Keep the PeftModel for inference.")
        todo = [a for a in adapter_names if a in self and a not in self.merged_adapters]
        if not todo:
            return
        layer = self.base_layer
        if hasattr(layer, "dequantize") and not self.merged_adapters:   # replaced, not written: keep it
            self._unmerged_copy = (layer, None, None)
        elif exact_unmerge and not self.merged_adapters:
            bias = getattr(layer, "bias", None)
            kept_bias = None if bias is None else bias.detach().clone()
            self._unmerged_copy = (layer, layer.weight.detach().clone(), kept_bias)
        weight, bias = self.get_base_weight(), self.get_base_bias()
        for name in todo:
            weight, bias = self.merge_weights(name, weight, bias)
            self.merged_adapters.append(name)
        self.set_base_weight(weight, bias)

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged_adapters:
            return
        copy = self.__dict__.pop("_unmerged_copy", None)
        if copy is not None:                    # exact: put the kept tensors (and layer) back
            layer, weight, bias = copy
            self.base_layer = layer
            if weight is not None:
                layer.weight.copy_(weight)
            if bias is not None:
                layer.bias.copy_(bias)
        else:
            weight, bias = self.get_base_weight(), self.get_base_bias()
            for name in reversed(self.merged_adapters):
                weight, bias = self.unmerge_weights(name, weight, bias)
            self.set_base_weight(weight, bias)
        self.merged_adapters = []

    def unwrap(self, merged: list[str]) -> nn.Module:
        if not merged:
            self.unmerge()
            self.restore_base_weight()
        return self.base_layer
