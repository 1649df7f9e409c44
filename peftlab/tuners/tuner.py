"""BaseTuner: the middle of PeftModel.base_model.model, one class per method (peft's LoraModel...).

PeftModel knows nothing about any method: it hands every call to its `base_model`, a tuner.
A tuner holds your model (`.model`), the configs of its adapters by name (`peft_config`) and the
active adapter, and implements what adapting means for its *family* of methods:

- layer methods (LoRA, IA3, ...) wrap existing layers: `layer_tuner.LayerTuner`;
- soft-prompt methods (prompt tuning, P-tuning, prefix tuning) add virtual tokens:
  `prompt_learning.PromptLearningTuner`.

A family implements the methods marked "family" below; each method then subclasses its family
and is registered with `registry.register_method`. What is the same for every family (adapters
by name, which parameters train, switching off) is written once, here.
"""
from contextlib import contextmanager
from typing import ClassVar

import torch
from torch import nn

from .wrapper import PassThrough

__all__ = ["BaseTuner"]

BASE_ADAPTER_NAME = "__base__"   # in mixed batches: "this example uses no adapter"


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Adapter weights and their arithmetic: fp32 for fp16/bf16 bases, else the base dtype.

    Why (peft does the same): an optimizer step changes a weight by lr * update, often less
    than bf16 can represent (8 significant bits: a change below ~0.4% of a weight is rounded
    away), so bf16 adapter weights would silently stop learning. Adapters are tiny, so fp32
    costs little. The adapter path casts its input up to fp32 and its output back to the
    base's dtype. So cast the base model *before* get_peft_model: `peft_model.to(bfloat16)`
    afterwards casts the adapters too (as in peft), and they then train in bf16.
    """
    return torch.promote_types(dtype, torch.float32)


def adopt_training_modes(root: nn.Module, existing: set[int], mode: bool) -> None:
    """Give every module under `root` that adding an adapter created (not in `existing`, the ids of the
    modules there before) the mode of the model it joined: a wrapper the mode of the layer it wraps,
    anything else the mode of the module it sits in (`mode` for `root`). Modules that were there keep theirs.

    Why: a new nn.Module starts in training mode. Without this, an adapter added to a model in eval mode
    (get_peft_model, add_adapter, load_adapter) would run its dropout at inference, a different
    output on every call, while the model still reported eval mode (peft has the same bug: peft#3753).
    """
    def visit(module: nn.Module, inherited: bool) -> None:
        if id(module) in existing:
            inherited = module.training
        else:
            wrapped = module._modules.get(getattr(module, "_inner", "") or "")
            if wrapped is not None and id(wrapped) in existing:
                inherited = wrapped.training
            module.training = inherited
        for child in module.children():
            visit(child, inherited)

    visit(root, mode)


class BaseTuner(PassThrough):
    """Your model plus everything one method needs to adapt it (see the module docstring)."""
    _inner = "model"
    config_class: ClassVar[type]        # the method's config; set by each method's tuner

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.training = model.training     # a wrapper is in its model's mode (see adopt_training_modes)
        self.peft_config: dict = {}
        self.active_adapter: str | None = None

    # --- family: creating, removing, running -------------------------------------------------
    def inject(self, adapter_name: str, config, *, tokenizer=None, for_loading: bool = False) -> None:
        """Create adapter `adapter_name` from a private copy of its config (the family may complete
        the copy). `for_loading`: its weights come from a saved folder next, in the form saved."""
        raise NotImplementedError

    def remove(self, adapter_name: str) -> None:
        """Remove every trace of an adapter (also what a failed inject half-created)."""
        raise NotImplementedError

    def activate(self, adapter_name: str | None) -> None:
        """Make the layers or encoders run `adapter_name` (None: none)."""

    def adapter_parameters(self, adapter_name: str) -> list[nn.Parameter]:
        """The parameters that train when this adapter is active."""
        raise NotImplementedError

    def adapter_state_dict(self, adapter_name: str) -> dict[str, torch.Tensor]:
        """{key in peft's file: live tensor}: what save_pretrained writes for this adapter."""
        raise NotImplementedError

    def optional_tensors(self, adapter_name: str) -> dict[str, torch.Tensor]:
        """{key in peft's file: live tensor} that a folder of this adapter may hold besides what
        adapter_state_dict lists (peft saves whole embedding matrices with some adapters). Loading
        writes nothing outside these two lists."""
        return {}

    def finish_load(self, adapter_name: str) -> None:
        """Called once a loaded adapter's weights are in: drop what was kept to undo a failed load."""

    @classmethod
    def check_loadable(cls, config, is_trainable: bool) -> None:
        """Refuse, before anything is touched, a folder that cannot be loaded as asked."""

    def set_disabled(self, disabled: bool) -> None:
        raise NotImplementedError

    def is_merged(self) -> bool:
        return False

    def merge_adapter(self, adapter_names: list[str], exact_unmerge: bool = False) -> None:
        raise NotImplementedError

    def unmerge_adapter(self) -> None:
        """Nothing to do for a family that never merges."""

    def unload(self, merged: list[str]) -> nn.Module:
        """Your model without adapter code: with the `merged` adapters folded in, or as it was."""
        raise NotImplementedError

    def forward(self, *args, adapter_names: list[str] | None = None, **kwargs):
        raise NotImplementedError

    def generate(self, *args, adapter_names: list[str] | None = None, **kwargs):
        raise NotImplementedError

    # --- shared: adapters by name --------------------------------------------------------------
    def check_name(self, adapter_name: str) -> None:
        if adapter_name not in self.peft_config:
            known = ", ".join(self.peft_config) or "none"
            raise ValueError(f"No adapter named {adapter_name!r}; this model has: {known}.")

    def add_adapter(self, adapter_name: str, config, **kwargs) -> None:
        """Add an adapter (not activated). One model holds adapters of one method, as in peft."""
        if adapter_name in self.peft_config or adapter_name == BASE_ADAPTER_NAME:
            raise ValueError(f"Adapter name {adapter_name!r} is taken; pick another name, "
                             "or delete_adapter it first.")
        if not isinstance(adapter_name, str) or not adapter_name or any(c in adapter_name for c in "./\\\0") \
                or hasattr(nn.Module, adapter_name):
            # Adapter weights live in ModuleDicts / ParameterDicts keyed by the name: a dot, or a name that
            # is already an nn.Module attribute ("half", "float", "train"...), cannot be such a key. A name
            # is also a folder's name in save_pretrained: a path separator would write outside the folder.
            raise ValueError(f"Adapter name {adapter_name!r} cannot be used: names must be non-empty, without "
                             "'.', '/' or '\\', and not an nn.Module attribute (like 'half' or 'train'); "
                             "pick another name.")
        if not isinstance(config, self.config_class):
            raise ValueError(f"This model holds {self.config_class.peft_type} adapters; one PeftModel holds "
                             f"adapters of one method (as in peft), so a {config.peft_type} adapter cannot join.")
        config = type(config).from_dict(config.to_dict())    # a copy: the caller's config never changes
        # Before the first adapter, everything of the tuner outside your model is new too (its dicts).
        existing = {id(m) for m in (self.modules() if self.peft_config else self.model.modules())}
        try:
            self.inject(adapter_name, config, **kwargs)
        except Exception:
            self.remove(adapter_name)
            raise
        adopt_training_modes(self, existing, self.model.training)
        self.peft_config[adapter_name] = config
        self.mark_trainable()

    def set_adapter(self, adapter_name: str) -> None:
        """Make `adapter_name` the adapter that runs (and trains)."""
        self.check_name(adapter_name)
        if self.is_merged():
            raise ValueError("An adapter is merged into the base weights; unmerge_adapter() before switching.")
        self.active_adapter = adapter_name
        self.activate(adapter_name)
        self.mark_trainable()

    def delete_adapter(self, adapter_name: str) -> None:
        """Remove an adapter everywhere; the first remaining one becomes active (as in peft)."""
        self.check_name(adapter_name)
        if self.is_merged():
            raise ValueError(f"Adapters are merged; unmerge_adapter() before deleting {adapter_name!r}.")
        self.remove(adapter_name)
        del self.peft_config[adapter_name]
        if self.active_adapter == adapter_name:
            self.active_adapter = None
            self.activate(None)
            if self.peft_config:
                self.set_adapter(next(iter(self.peft_config)))
        self.mark_trainable()

    def mark_trainable(self) -> None:
        """Freeze everything, then unfreeze the active adapter (unless it is loaded frozen)."""
        self.requires_grad_(False)
        config = self.peft_config.get(self.active_adapter)
        if config is None or config.inference_mode:
            return
        for p in self.adapter_parameters(self.active_adapter):
            p.requires_grad_(True)

    @contextmanager
    def disable_adapter(self):
        """Inside this block the model is exactly the base model."""
        if self.is_merged():
            raise ValueError("An adapter is merged into the base weights, so disabling cannot remove it; "
                             "call unmerge_adapter() first.")
        self.set_disabled(True)
        try:
            yield
        finally:
            self.set_disabled(False)

    def clear(self) -> nn.Module:
        """Forget every adapter's config and return the model (after unload)."""
        self.peft_config, self.active_adapter = {}, None
        return self.model
