"""What every layer-wrapping method shares: named adapters, on/off, merging, mixed batches.

A method (LoRA, IA3, VeRA, LoHa, LoKr, ...) replaces a targeted layer by a wrapper that keeps
the original as `base_layer` and adds per-adapter weights in dicts keyed by adapter name
(`lora_A["default"]`, ...), exactly like `peft`, so state-dict keys match peft's:
`...q_proj.base_layer.weight`, `...q_proj.lora_A.default.weight`. A subclass says which dicts
hold its trained weights (`adapter_param_names`) and implements three things:
`update_layer` (create one adapter), `add_adapter_output` (the forward of one adapter) and
`delta_weight` (its update as a matrix, to merge it). Everything else lives here.

Weights as matrices: whatever the storage (nn.Linear keeps (out, in), GPT-2's Conv1D keeps
(in, out), nn.Embedding keeps (vocab, dim), i.e. a linear map of a one-hot input stored
transposed), `weight_matrix()` shows it as the (out, in) matrix of y = W x, so every method's
math reads like its paper.

`register_layer_method(peft_type, {base layer type: wrapper class})` plugs a method in.
`ModulesToSaveWrapper` keeps trainable named copies of whole modules (e.g. a classifier).
"""
import copy

import torch
from torch import nn

BASE_ADAPTER_NAME = "__base__"   # in mixed batches: "this example uses no adapter"
LAYER_METHODS: dict[str, dict[type, type]] = {}


def register_layer_method(peft_type: str, layer_classes: dict[type, type]) -> None:
    """Declare which wrapper class adapts which base layer type for method `peft_type`."""
    LAYER_METHODS[peft_type] = layer_classes


def compute_dtype(weight: torch.Tensor) -> torch.dtype:
    """Adapter weights and their arithmetic: fp32 for fp16/bf16 bases, else the base dtype.

    Why (peft does the same): an optimizer step changes a weight by lr * update, often less
    than bf16 can represent (8 significant bits: a change below ~0.4% of a weight is rounded
    away), so bf16 adapter weights would silently stop learning. Adapters are tiny, so fp32
    costs little. The adapter path casts its input up to fp32 and its output back to the
    base's dtype. So cast the base model *before* get_peft_model: `peft_model.to(bfloat16)`
    afterwards casts the adapters too (as in peft), and they then train in bf16.
    """
    return torch.promote_types(weight.dtype, torch.float32)


class PassThrough(nn.Module):
    """A wrapper whose missing attributes are read from the module it wraps (named by `_inner`):
    code around a wrapped layer may read `in_features`, `weight`, `padding_idx`..., and
    `peft_model.config` reads the model's config."""
    _inner = ""

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == self._inner:
                raise
            return getattr(getattr(self, self._inner), name)


class AdapterLayer(PassThrough):
    """A base layer plus any number of named adapters of one method."""
    _inner = "base_layer"
    adapter_param_names: tuple[str, ...] = ()   # dicts {adapter name: trained weights}
    other_adapter_dicts: tuple[str, ...] = ()   # other per-adapter dicts (scaling, dropout...)

    def __init__(self, base_layer: nn.Module, transposed: bool = False):
        super().__init__()
        self.base_layer = base_layer
        self.transposed = transposed            # does the base store its weight as (in, out)?
        self.active_adapters: list[str] = []
        self.merged_adapters: list[str] = []     # folded into base_layer.weight right now
        self.disabled = False
        self.batch_adapter_names: list[str] | None = None   # one adapter name per example

    # --- what a method implements ---------------------------------------------------------
    def update_layer(self, adapter_name: str, config) -> None:
        raise NotImplementedError

    def add_adapter_output(self, adapter_name: str, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        """`result` (the base output for input `x`) changed by one adapter."""
        raise NotImplementedError

    def delta_weight(self, adapter_name: str) -> torch.Tensor:
        """The adapter's additive update of `weight_matrix()`, shape (out, in), compute dtype."""
        raise NotImplementedError

    def merged_weight(self, adapter_name: str, weight: torch.Tensor) -> torch.Tensor:
        """The (out, in) weight with the adapter folded in; additive by default."""
        return weight + self.delta_weight(adapter_name)

    def restore_base(self, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        """Turn the base layer's output into the *original* base output. Identity, except for
        inits that rewrote the base weight (PiSSA)."""
        return result

    def restore_base_weight(self) -> None:
        """Undo any change an init made to the base weight (PiSSA), before unwrapping."""

    # --- bookkeeping -----------------------------------------------------------------------
    @property
    def adapters(self) -> list[str]:
        names = [n for attr in self.adapter_param_names for n in getattr(self, attr).keys()]
        return list(dict.fromkeys(names))

    def __contains__(self, adapter_name: str) -> bool:
        return adapter_name in self.adapters

    def adapter_state_dict(self, adapter_name: str) -> dict[str, torch.Tensor]:
        """{key relative to this layer, adapter name left out: tensor}, e.g. {"lora_A.weight": A}."""
        out = {}
        for attr in self.adapter_param_names:
            store = getattr(self, attr)
            if adapter_name not in store:
                continue
            item = store[adapter_name]
            if isinstance(item, nn.Parameter):
                out[attr] = item
            else:
                out.update({f"{attr}.{k}": v for k, v in item.state_dict(keep_vars=True).items()})
        return out

    def delete(self, adapter_name: str) -> None:
        for attr in self.adapter_param_names + self.other_adapter_dicts:
            store = getattr(self, attr)
            if adapter_name in store:
                del store[adapter_name]
        if adapter_name in self.active_adapters:
            self.active_adapters.remove(adapter_name)

    def weight_matrix(self) -> torch.Tensor:
        """The base weight as the (out, in) matrix of y = W x (a view, no copy)."""
        w = self.base_layer.weight
        return w.T if self.transposed else w

    # --- forward ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        if self.disabled:
            return self.restore_base(x, result)
        if self.merged_adapters:            # the adapters are already inside base_layer.weight
            return result
        if self.batch_adapter_names is not None:
            return self._forward_mixed(x, result)
        for name in self.active_adapters:   # PeftModel.set_adapter lists only adapters present here
            result = self.add_adapter_output(name, x, result)
        return result

    def _forward_mixed(self, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        """Each example through its own adapter: example i uses batch_adapter_names[i]."""
        names = self.batch_adapter_names
        if x.shape[0] != len(names):
            raise ValueError(f"adapter_names has {len(names)} entries but the batch has "
                             f"{x.shape[0]} examples; give one adapter name per example.")
        out = result.clone()
        for name in dict.fromkeys(names):
            rows = torch.tensor([i for i, n in enumerate(names) if n == name], device=x.device)
            if name in self:
                out[rows] = self.add_adapter_output(name, x[rows], result[rows])
            else:   # "__base__", or an adapter that does not touch this layer
                out[rows] = self.restore_base(x[rows], result[rows])
        return out

    # --- merging ---------------------------------------------------------------------------
    @torch.no_grad()
    def merge(self, adapter_names: list[str]) -> None:
        """Fold adapters into the base weight: the forward then costs what the base costs.

        Idempotent: an adapter already merged is skipped, so merging twice never adds the
        update twice. The unmerged weight is kept (one copy of this layer's weight), so that
        `unmerge` restores it bit for bit; subtracting the update again would leave rounding
        errors, large ones in bf16.
        """
        todo = [a for a in adapter_names if a in self and a not in self.merged_adapters]
        if not todo:
            return
        w = self.base_layer.weight
        if not self.merged_adapters:
            self.register_buffer("unmerged_weight", w.detach().clone(), persistent=False)
        merged = self.weight_matrix().to(compute_dtype(w))
        for name in todo:
            merged = self.merged_weight(name, merged)
            self.merged_adapters.append(name)
        w.copy_((merged.T if self.transposed else merged).to(w.dtype))

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged_adapters:
            self.base_layer.weight.copy_(self.unmerged_weight)
            del self.unmerged_weight
            self.merged_adapters = []


class ModulesToSaveWrapper(PassThrough):
    """Keeps the original module and one trainable full copy per adapter (peft's layout:
    `classifier.original_module.weight`, `classifier.modules_to_save.default.weight`)."""
    _inner = "original_module"

    def __init__(self, original_module: nn.Module):
        super().__init__()
        self.original_module = original_module
        self.modules_to_save = nn.ModuleDict()
        self.active_adapters: list[str] = []
        self.disabled = False
        self.batch_adapter_names: list[str] | None = None

    def update_layer(self, adapter_name: str, config=None) -> None:
        self.modules_to_save[adapter_name] = copy.deepcopy(self.original_module)

    def __contains__(self, adapter_name: str) -> bool:
        return adapter_name in self.modules_to_save

    @property
    def adapters(self) -> list[str]:
        return list(self.modules_to_save.keys())

    def adapter_state_dict(self, adapter_name: str) -> dict[str, torch.Tensor]:
        # peft saves the copy under the module's own name: "classifier.weight".
        return dict(self.modules_to_save[adapter_name].state_dict(keep_vars=True))

    def delete(self, adapter_name: str) -> None:
        if adapter_name in self.modules_to_save:
            del self.modules_to_save[adapter_name]
        if adapter_name in self.active_adapters:
            self.active_adapters.remove(adapter_name)

    def _module_for(self, name: str) -> nn.Module:
        return self.modules_to_save[name] if name in self else self.original_module

    def forward(self, x, *args, **kwargs):
        if self.batch_adapter_names is not None and not self.disabled:
            names = self.batch_adapter_names
            out = None
            for name in dict.fromkeys(names):
                rows = torch.tensor([i for i, n in enumerate(names) if n == name], device=x.device)
                part = self._module_for(name)(x[rows], *args, **kwargs)
                if out is None:
                    out = part.new_empty((len(names),) + part.shape[1:])
                out[rows] = part
            return out
        active = [a for a in self.active_adapters if a in self]
        if self.disabled or not active:
            return self.original_module(x, *args, **kwargs)
        return self.modules_to_save[active[0]](x, *args, **kwargs)


def bias_parameters(model: nn.Module, config, adapter_name: str) -> dict[str, nn.Parameter]:
    """Biases that train (and are saved) with an adapter, by name in `model`.

    config.bias: "none"; "all" = every bias of the model (not inside modules_to_save
    wrappers, whose copies train in full anyway); "lora_only" = biases of wrapped layers.
    """
    mode = getattr(config, "bias", "none")
    if mode == "all":
        hidden = tuple(f"{n}." for n, m in model.named_modules() if isinstance(m, ModulesToSaveWrapper))
        return {n: p for n, p in model.named_parameters()
                if n.rsplit(".", 1)[-1] == "bias" and not n.startswith(hidden)}
    if mode == "lora_only":
        return {f"{n}.base_layer.bias": m.base_layer.bias for n, m in model.named_modules()
                if isinstance(m, AdapterLayer) and adapter_name in m
                and getattr(m.base_layer, "bias", None) is not None}
    return {}
