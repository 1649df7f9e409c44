"""The family of methods that wrap existing layers (LoRA, IA3, ...): injection, switching, merging, saving.

A method of this family is a subclass of LayerTuner (peft's LoraModel, IA3Model...) that says
- `config_class`: its config, a LayerMethodConfig (layer_config.py);
- `layers`: {base layer type: wrapper class}, the layers it can wrap and with what (or, for a
  rule that types cannot state, `wrapper_class(module)` and `layer_description()`);
- `default_targets`: {model_type: target names}, used when target_modules is None;
- `all_linear`: the types "all-linear" selects (default: the nn.Linear and Conv1D it can wrap);
- `shared_state_names`: dicts of model-level tensors, one entry per adapter, frozen and saved as
  `base_model.<name>` (VeRA's random projections shared by all layers);
and may override hooks: `default_target_modules` (what target_modules=None means),
`prepare_config` (complete the private copy of a config for this model), `check_new_adapter`
(refuse a combination), `pre_injection_hook` (create model-level state) and `create_wrapper`
(build one wrapper). Everything else is here.
"""
import re
import warnings
from collections import Counter
from contextlib import contextmanager
from typing import ClassVar

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from peftlab.config import TASK_HEADS
from peftlab.tuners.targeting import find_modules_to_save, find_targets, replace_module, type_names

from .layer import BaseTunerLayer
from .modules_to_save import ModulesToSaveWrapper
from .tuner import BASE_ADAPTER_NAME, BaseTuner
from .wrapper import AdapterWrapper

__all__ = ["LayerTuner"]

PREFIX = "base_model.model."   # peft nests your model twice: PeftModel.base_model.model
# peft saves the embedding matrices with an adapter whose target_modules name one of these.
EMBEDDING_LAYER_NAMES = ("embed_tokens", "lm_head")


def visible_layer(model: nn.Module, name: str) -> nn.Module:
    """The layer at `name` as a config sees it: a wrapper counts as its base layer."""
    module = model.get_submodule(name)
    return getattr(module, "base_layer", module) if isinstance(module, AdapterWrapper) else module


def record_fan_in_fan_out(tuner, config) -> None:
    """Set `config.fan_in_fan_out` when the targets are GPT-2 Conv1D layers, as peft does. The
    layer type tells peftlab how W is stored; the flag only records it, for peft to read."""
    conv1d = [isinstance(visible_layer(tuner.model, n), Conv1D) for n in find_targets(tuner.model, config, tuner)]
    if any(conv1d):
        config.fan_in_fan_out = True
    elif config.fan_in_fan_out:
        warnings.warn("fan_in_fan_out=True is ignored for nn.Linear, which stores W as (out, in).", stacklevel=2)


class LayerTuner(BaseTuner):
    """Adapters that live inside the model's layers (see the module docstring)."""
    layers: ClassVar[dict[type, type]] = {}
    default_targets: ClassVar[dict[str, list[str]]] = {}
    all_linear: ClassVar[tuple[type, ...] | None] = None
    shared_state_names: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def wrapper_class(cls, module: nn.Module) -> type | None:
        """The wrapper class for `module`, or None if this method cannot wrap it."""
        return next((c for t, c in cls.layers.items() if isinstance(module, t)), None)

    @classmethod
    def layer_description(cls) -> str:
        """What this method wraps, for error messages ("nn.Linear, transformers.Conv1D")."""
        return type_names(cls.layers)

    @classmethod
    def all_linear_types(cls) -> tuple[type, ...]:
        if cls.all_linear is not None:
            return cls.all_linear
        return tuple(t for t in cls.layers if issubclass(t, (nn.Linear, Conv1D)))

    # --- hooks a method may override ---------------------------------------------------------
    @classmethod
    def default_target_modules(cls, model: nn.Module, config) -> list[str] | str | None:
        """target_modules for a config that names none: the method's default for this architecture
        (None: no default, and find_targets asks for target_modules). The one place that decides."""
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        return list(cls.default_targets[model_type]) if model_type in cls.default_targets else None

    def prepare_config(self, config) -> None:
        """Complete `config` (a private copy) for this model, e.g. record facts peft saves."""

    def check_new_adapter(self, config) -> None:
        """Refuse an adapter that cannot join the ones already here."""

    def rewrites_base_weights(self, config) -> bool:
        """Does creating this adapter change the base weights (PiSSA's init)?"""
        return False

    def pre_injection_hook(self, adapter_name: str, config, targets: list[str]) -> None:
        """Create model-level state (in `shared_state_names` dicts) before any layer is wrapped;
        `targets` are the names of the layers about to be wrapped (to size shared matrices)."""

    def create_wrapper(self, module: nn.Module, module_name: str, adapter_name: str, config) -> BaseTunerLayer:
        """A new wrapper around `module` (the layer type decides the wrapper class)."""
        return self.wrapper_class(module)(module, module_name=module_name)

    # --- the wrappers in the model -----------------------------------------------------------
    def wrappers(self) -> list[tuple[str, AdapterWrapper]]:
        return [(n, m) for n, m in self.model.named_modules() if isinstance(m, AdapterWrapper)]

    def adapter_layers(self) -> list[BaseTunerLayer]:
        return [m for _, m in self.wrappers() if isinstance(m, BaseTunerLayer)]

    # --- creating and removing -------------------------------------------------------------------
    def inject(self, adapter_name, config, *, tokenizer=None, for_loading=False):
        if config.target_modules is None:   # saved as chosen, as in peft
            config.target_modules = self.default_target_modules(self.model, config)
        self.prepare_config(config)
        self.check_new_adapter(config)
        model = self.model
        targets = find_targets(model, config, self)   # without a default for this model: an error
        optional = TASK_HEADS.get(config.task_type, ())
        to_save = find_modules_to_save(model, [*(config.modules_to_save or []), *optional], optional)
        if for_loading and self.rewrites_base_weights(config):
            # If the folder then turns out to be unusable, the base must come back bit for bit,
            # which undoing the init (exact only up to rounding) cannot promise: keep a copy.
            self._load_backup = [(p, p.detach().clone()) for n in targets
                                 for p in visible_layer(model, n).parameters()]
        self.pre_injection_hook(adapter_name, config, targets)
        for name in targets:
            module = model.get_submodule(name)
            if not isinstance(module, BaseTunerLayer):
                module = self.create_wrapper(module, name, adapter_name, config)
                replace_module(model, name, module)
            module.update_layer(adapter_name, config)
        for name in to_save:
            module = model.get_submodule(name)
            if not isinstance(module, ModulesToSaveWrapper):
                module = ModulesToSaveWrapper(module)
                replace_module(model, name, module)
            module.update_layer(adapter_name, config)

    def remove(self, adapter_name):
        for attr in self.shared_state_names:
            store = getattr(self, attr, {})
            if adapter_name in store:
                del store[adapter_name]
        for name, w in self.wrappers():
            w.delete(adapter_name)
            if not w.adapters:   # a wrapper without adapters becomes the plain module again
                replace_module(self.model, name, w.unwrap(merged=[]))
        with torch.no_grad():
            for param, original in self.__dict__.pop("_load_backup", []):
                param.copy_(original)

    def finish_load(self, adapter_name):
        self.__dict__.pop("_load_backup", None)

    def activate(self, adapter_name):
        for _, w in self.wrappers():
            w.active_adapters = [adapter_name] if adapter_name in w else []

    # --- what trains and what is saved -------------------------------------------------------------
    def trained_biases(self, adapter_name: str) -> dict[str, nn.Parameter]:
        """Biases of the base model that train (and are saved) with an adapter, by name in the model.

        config.bias: "none"; "all" = every bias of the model (not inside modules_to_save
        wrappers, whose copies train in full anyway); "<method>_only" ("lora_only") = the
        biases of the layers this adapter wraps.
        """
        mode = getattr(self.peft_config.get(adapter_name), "bias", "none")
        if mode == "all":
            hidden = tuple(f"{n}." for n, m in self.wrappers() if isinstance(m, ModulesToSaveWrapper))
            return {n: p for n, p in self.model.named_parameters()
                    if n.rsplit(".", 1)[-1] == "bias" and not n.startswith(hidden)}
        if mode.endswith("_only"):
            return {f"{n}.base_layer.bias": m.base_layer.bias for n, m in self.wrappers()
                    if isinstance(m, BaseTunerLayer) and adapter_name in m
                    and getattr(m.base_layer, "bias", None) is not None}
        return {}

    def adapter_parameters(self, adapter_name):
        params = [t for _, w in self.wrappers() if adapter_name in w
                  for t in w.trainable_tensors(adapter_name).values()]
        return params + list(self.trained_biases(adapter_name).values())

    def adapter_state_dict(self, adapter_name):
        out = {}
        for name, w in self.wrappers():
            if adapter_name in w:
                out.update({f"{PREFIX}{name}.{k}": t for k, t in w.adapter_state_dict(adapter_name).items()})
        out.update({PREFIX + n: p for n, p in self.trained_biases(adapter_name).items()})
        for attr in self.shared_state_names:   # peft's keys: "base_model.vera_A", no adapter name
            if adapter_name in getattr(self, attr, {}):
                out[f"base_model.{attr}"] = getattr(self, attr)[adapter_name]
        return out

    def optional_tensors(self, adapter_name):
        """What peft writes besides the adapter's own tensors: the embedding matrices when
        target_modules names embed_tokens or lm_head (as `<module>.base_layer.weight`), and with
        bias="all" the biases inside modules_to_save wrappers once more, under their inner names."""
        out = self._saved_embeddings(adapter_name)
        if getattr(self.peft_config[adapter_name], "bias", "none") == "all":
            for name, w in self.wrappers():
                if isinstance(w, ModulesToSaveWrapper) and adapter_name in w:
                    for inner, module in (("original_module", w.original_module),
                                          ("modules_to_save", w.modules_to_save[adapter_name])):
                        out.update({f"{PREFIX}{name}.{inner}.{k}": p for k, p in module.named_parameters()
                                    if k.rsplit(".", 1)[-1] == "bias"})
        return out

    def _saved_embeddings(self, adapter_name: str) -> dict:
        targets = self.peft_config[adapter_name].target_modules
        if isinstance(targets, str) and targets != "all-linear":
            named = any(re.fullmatch(targets, n) and n.rsplit(".", 1)[-1] in EMBEDDING_LAYER_NAMES
                        for n, _ in self.wrappers())
        else:
            named = isinstance(targets, list) and any(t in EMBEDDING_LAYER_NAMES for t in targets)
        if not named:
            return {}
        get_in, get_out = (getattr(self.model, f, None) for f in ("get_input_embeddings", "get_output_embeddings"))
        embeddings = [get() for get in (get_in, get_out) if callable(get)]
        return {f"{PREFIX}{n}.base_layer.{k}": t for n, w in self.wrappers()
                if isinstance(w, BaseTunerLayer) and any(w is e for e in embeddings)
                for k, t in w.base_layer.state_dict(keep_vars=True).items()}

    # --- running ---------------------------------------------------------------------------------
    def set_disabled(self, disabled):
        for _, w in self.wrappers():
            w.disabled = disabled

    def forward(self, *args, adapter_names=None, **kwargs):
        with self._routing(adapter_names, args, kwargs):
            return self.model(*args, **kwargs)

    def generate(self, *args, adapter_names=None, **kwargs):
        with self._routing(adapter_names, args, kwargs):
            return self.model.generate(*args, **kwargs)

    @contextmanager
    def _routing(self, adapter_names: list[str] | None, args: tuple, kwargs: dict):
        """Mixed batches: example i runs through adapter adapter_names[i] ("__base__": none)."""
        if adapter_names is None:
            yield
            return
        first = next((t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)), None)
        if first is not None and first.shape[0] != len(adapter_names):
            raise ValueError(f"adapter_names has {len(adapter_names)} entries but the batch has "
                             f"{first.shape[0]} examples; give one adapter name per example.")
        if self.model.training:
            raise ValueError("adapter_names (one adapter per example) works in eval mode only; call "
                             "model.eval() first. Training with it would mix several adapters' updates.")
        if self.is_merged():
            raise ValueError("adapter_names cannot route examples while an adapter is merged into the "
                             "base weights; call unmerge_adapter() first.")
        unknown = set(adapter_names) - set(self.peft_config) - {BASE_ADAPTER_NAME}
        if unknown:
            raise ValueError(f"Unknown adapter names {sorted(unknown)}; known: "
                             f"{', '.join(self.peft_config)}, and {BASE_ADAPTER_NAME!r} for the base model.")
        wrappers = [w for _, w in self.wrappers()]
        for w in wrappers:
            w.batch_adapter_names = list(adapter_names)
        try:
            yield
        finally:
            for w in wrappers:
                w.batch_adapter_names = None

    # --- merging and unloading -----------------------------------------------------------------
    def is_merged(self):
        return any(layer.merged_adapters for layer in self.adapter_layers())

    def merge_adapter(self, adapter_names, exact_unmerge=False):
        uses = Counter(id(p) for _, p in self.model.named_parameters(remove_duplicate=False))
        for name, layer in self.wrappers():
            if isinstance(layer, BaseTunerLayer) and any(n in layer for n in adapter_names):
                weight = getattr(layer.base_layer, "weight", None)
                if weight is not None and uses[id(weight)] > 1:   # e.g. input embeddings tied to lm_head
                    warnings.warn(f"{name}'s weight is shared with another module (tied embeddings?); "
                                  "merging changes that module too, so the merged model differs.", stacklevel=2)
                layer.merge(adapter_names, exact_unmerge=exact_unmerge)

    def unmerge_adapter(self):
        for layer in self.adapter_layers():
            layer.unmerge()

    def unload(self, merged):
        for name, w in self.wrappers():
            replace_module(self.model, name, w.unwrap(merged))
        for attr in self.shared_state_names:
            getattr(self, attr).clear()
        return self.clear()

