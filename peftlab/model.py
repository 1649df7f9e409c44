"""PeftModel: a base model plus named adapters, with peft's API.

`get_peft_model(model, config)` swaps the targeted layers of `model` for adapter wrappers
*in place* (as peft does: no copy of a large model) and returns a PeftModel around it. The
nesting is peft's, PeftModel.base_model.model is your model, so attribute paths and
state-dict keys read the same in both libraries. Everything else (forward, generate,
`.config`...) is passed through to your model.

One PeftModel holds adapters of one method, each under a name ("default" first); one is
active at a time and only its weights (and its modules_to_save copies) require grad.

Soft-prompt methods (prompt tuning, P-tuning, prefix tuning) wrap no layer: each adapter is a
prompt encoder in `prompt_encoder[name]` (peft's name), and forward / generate go through
soft_prompts.py, which puts the virtual tokens in front of the input.
"""
import warnings
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from torch import nn

from . import soft_prompts
from .config import PeftConfig
from .hf_format import load_adapter_weights, read_adapter, save_adapter
from .inject import find_modules_to_save, find_targets, refuse_double_injection, replace_module
from .memory import parameter_counts
from .tuners import LAYER_METHODS, PROMPT_METHODS
from .tuners.base import BASE_ADAPTER_NAME, AdapterLayer, ModulesToSaveWrapper, PassThrough, bias_parameters

WRAPPERS = (AdapterLayer, ModulesToSaveWrapper)


class TunerModel(PassThrough):
    """The middle of PeftModel.base_model.model (peft calls it LoraModel, IA3Model...)."""
    _inner = "model"

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)


class PeftModel(PassThrough):
    """Your model (`get_base_model()`) with named adapters; see the module docstring."""
    _inner = "base_model"

    def __init__(self, model: nn.Module, peft_config: PeftConfig, adapter_name: str = "default", tokenizer=None):
        super().__init__()
        refuse_double_injection(model)
        self.base_model = TunerModel(model)
        self.peft_config: dict[str, PeftConfig] = {}
        self._active_adapter: str | None = None
        self._prompts_disabled = False
        self.add_adapter(adapter_name, peft_config, tokenizer=tokenizer)
        self.set_adapter(adapter_name)

    # --- the model and its adapters --------------------------------------------------------
    def get_base_model(self) -> nn.Module:
        return self.base_model.model

    @property
    def active_adapter(self) -> str | None:
        return self._active_adapter

    @property
    def active_adapters(self) -> list[str]:
        return [self._active_adapter] if self._active_adapter else []

    def _wrappers(self) -> list[tuple[str, nn.Module]]:
        return [(n, m) for n, m in self.get_base_model().named_modules() if isinstance(m, WRAPPERS)]

    def _layers(self) -> list[AdapterLayer]:
        return [m for _, m in self._wrappers() if isinstance(m, AdapterLayer)]

    def _check_name(self, name: str) -> None:
        if name not in self.peft_config:
            known = ", ".join(self.peft_config) or "none"
            raise ValueError(f"No adapter named {name!r}; this model has: {known}.")

    def add_adapter(self, adapter_name: str, peft_config: PeftConfig, tokenizer=None) -> None:
        """Add an adapter (not activated, except the first one): wrap its target layers, or, for
        a soft-prompt method, create its prompt encoder (`tokenizer`: for a TEXT init)."""
        if adapter_name in self.peft_config or adapter_name == BASE_ADAPTER_NAME:
            raise ValueError(f"Adapter name {adapter_name!r} is taken; pick another name, "
                             "or delete_adapter it first.")
        kind = peft_config.peft_type
        if kind not in LAYER_METHODS and kind not in PROMPT_METHODS:
            raise ValueError(f"PeftModel cannot run {kind} adapters; it handles: "
                             f"{', '.join([*LAYER_METHODS, *PROMPT_METHODS])}.")
        if any(c.peft_type != kind for c in self.peft_config.values()):
            raise ValueError(f"This model holds {next(iter(self.peft_config.values())).peft_type} "
                             "adapters; one PeftModel holds adapters of one method (as in peft).")
        if peft_config.is_prompt_learning:
            config = soft_prompts.prepare_config(peft_config, self.get_base_model())
            encoder = soft_prompts.create_encoder(config, self.get_base_model(), tokenizer)
            if "prompt_encoder" not in self._modules:
                self.prompt_encoder = nn.ModuleDict()
            self.prompt_encoder[adapter_name] = encoder
            self.peft_config[adapter_name] = config
            self._mark_trainable()
            return
        configs = [peft_config, *self.peft_config.values()]
        if len(configs) > 1 and any(c.rewrites_base_weights for c in configs):
            raise ValueError("An adapter whose init rewrites the base weights (PiSSA) cannot share a model "
                             "with other adapters: they would see the rewritten base (peft refuses too).")
        model, classes = self.get_base_model(), LAYER_METHODS[kind]
        targets = find_targets(model, peft_config, tuple(classes), method=kind)
        optional = ("classifier", "score") if peft_config.task_type == "SEQ_CLS" else ()  # peft's defaults
        to_save = find_modules_to_save(model, [*(peft_config.modules_to_save or []), *optional], optional)
        try:
            for name in targets:
                module = model.get_submodule(name)
                if not isinstance(module, AdapterLayer):
                    wrapper_class = next(c for t, c in classes.items() if isinstance(module, t))
                    module = wrapper_class(module)
                    replace_module(model, name, module)
                module.update_layer(adapter_name, peft_config)
            for name in to_save:
                module = model.get_submodule(name)
                if not isinstance(module, ModulesToSaveWrapper):
                    module = ModulesToSaveWrapper(module)
                    replace_module(model, name, module)
                module.update_layer(adapter_name, peft_config)
        except Exception:
            self._remove_traces(adapter_name)
            raise
        self.peft_config[adapter_name] = peft_config
        self._mark_trainable()

    def set_adapter(self, adapter_name: str) -> None:
        """Make `adapter_name` the adapter that runs (and trains)."""
        self._check_name(adapter_name)
        if self._merged():
            raise ValueError("An adapter is merged into the base weights; unmerge_adapter() "
                             "before switching.")
        for _, w in self._wrappers():
            w.active_adapters = [adapter_name] if adapter_name in w else []
        self._active_adapter = adapter_name
        self._mark_trainable()

    def delete_adapter(self, adapter_name: str) -> None:
        """Remove an adapter everywhere; wrappers left without adapters become plain layers again."""
        self._check_name(adapter_name)
        if any(adapter_name in layer.merged_adapters for layer in self._layers()):
            raise ValueError(f"Adapter {adapter_name!r} is merged; unmerge_adapter() before deleting it.")
        self._remove_traces(adapter_name)
        del self.peft_config[adapter_name]
        if self._active_adapter == adapter_name:
            self._active_adapter = None
            if self.peft_config:   # like peft: the first remaining adapter becomes active
                self.set_adapter(next(iter(self.peft_config)))
        self._mark_trainable()

    def _remove_traces(self, adapter_name: str) -> None:
        model = self.get_base_model()
        if "prompt_encoder" in self._modules and adapter_name in self.prompt_encoder:
            del self.prompt_encoder[adapter_name]
        for name, w in self._wrappers():
            w.delete(adapter_name)   # also clears what a failed add_adapter half-created
            if not w.adapters:
                plain = w.base_layer if isinstance(w, AdapterLayer) else w.original_module
                replace_module(model, name, plain)

    def _mark_trainable(self) -> None:
        """Freeze everything, then unfreeze the active adapter (unless loaded for inference)."""
        model = self.get_base_model()
        model.requires_grad_(False)
        if "prompt_encoder" in self._modules:
            self.prompt_encoder.requires_grad_(False)
        config = self.peft_config.get(self._active_adapter)
        if config is None or config.inference_mode:
            return
        if config.is_prompt_learning:
            self.prompt_encoder[self._active_adapter].requires_grad_(True)
            return
        for _, w in self._wrappers():
            if self._active_adapter in w:
                for t in w.adapter_state_dict(self._active_adapter).values():
                    if isinstance(t, nn.Parameter):
                        t.requires_grad_(True)
        for p in bias_parameters(model, config, self._active_adapter).values():
            p.requires_grad_(True)

    # --- running ---------------------------------------------------------------------------
    def _is_prompt_learning(self) -> bool:
        return any(c.is_prompt_learning for c in self.peft_config.values())

    def _prompts_active(self, adapter_names) -> bool:
        """Does this call go through soft_prompts.py (a soft-prompt adapter, active, not disabled)?"""
        if not self._is_prompt_learning() or self._active_adapter is None or self._prompts_disabled:
            return False
        if adapter_names is not None:
            raise ValueError("adapter_names (one adapter per example) is implemented for layer methods only; "
                             "with soft prompts, run one batch per adapter (set_adapter between them).")
        return True

    def forward(self, *args, adapter_names: list[str] | None = None, **kwargs):
        """The base model's forward (labels and all). `adapter_names`, one per example,
        runs each example through its own adapter ("__base__": none) in one batch.
        With a soft-prompt adapter, the virtual tokens go in front (soft_prompts.forward)."""
        if self._prompts_active(adapter_names):
            return soft_prompts.forward(self, *args, **kwargs)
        with self._routing(adapter_names):
            return self.base_model(*args, **kwargs)

    def generate(self, *args, adapter_names: list[str] | None = None, **kwargs):
        if self._prompts_active(adapter_names):
            return soft_prompts.generate(self, *args, **kwargs)
        with self._routing(adapter_names):
            return self.get_base_model().generate(*args, **kwargs)

    @contextmanager
    def _routing(self, adapter_names: list[str] | None):
        if adapter_names is None:
            yield
            return
        if self.get_base_model().training:
            raise ValueError("adapter_names (one adapter per example) works in eval mode only; call "
                             "model.eval() first. Training with it would mix several adapters' updates.")
        if self._merged():
            raise ValueError("adapter_names cannot route examples while an adapter is merged into the "
                             "base weights; call unmerge_adapter() first.")
        unknown = set(adapter_names) - set(self.peft_config) - {BASE_ADAPTER_NAME}
        if unknown:
            raise ValueError(f"Unknown adapter names {sorted(unknown)}; known: "
                             f"{', '.join(self.peft_config)}, and {BASE_ADAPTER_NAME!r} for the base model.")
        wrappers = [w for _, w in self._wrappers()]
        for w in wrappers:
            w.batch_adapter_names = list(adapter_names)
        try:
            yield
        finally:
            for w in wrappers:
                w.batch_adapter_names = None

    @contextmanager
    def disable_adapter(self):
        """Inside this block the model is exactly the base model."""
        if self._merged():
            raise ValueError("An adapter is merged into the base weights, so disabling cannot remove it; "
                             "call unmerge_adapter() first.")
        wrappers = [w for _, w in self._wrappers()]
        for w in wrappers:
            w.disabled = True
        self._prompts_disabled = True   # soft prompts: forward and generate go straight to the base
        try:
            yield
        finally:
            self._prompts_disabled = False
            for w in wrappers:
                w.disabled = False

    # --- merging ---------------------------------------------------------------------------
    def _merged(self) -> bool:
        return any(layer.merged_adapters for layer in self._layers())

    def merge_adapter(self, adapter_names: list[str] | None = None) -> None:
        """Fold adapters (default: the active one) into the base weights. Merging an adapter
        that is already merged does nothing (merged adapters are a set)."""
        names = adapter_names or self.active_adapters
        for n in names:
            self._check_name(n)
        if self._is_prompt_learning():
            raise ValueError("Soft prompts cannot be merged: they are extra inputs (virtual tokens), not a change "
                             "of weights. Keep the PeftModel for inference, or unload() to get the base model back.")
        uses = Counter(id(p) for _, p in self.get_base_model().named_parameters(remove_duplicate=False))
        for name, layer in self._wrappers():
            if isinstance(layer, AdapterLayer) and any(n in layer for n in names):
                if uses[id(layer.base_layer.weight)] > 1:   # e.g. input embeddings tied to lm_head
                    warnings.warn(f"{name}'s weight is shared with another module (tied embeddings?); "
                                  "merging changes that module too, so the merged model differs.")
                layer.merge(names)

    def unmerge_adapter(self) -> None:
        """Give the base weights back exactly as they were before merge_adapter."""
        for layer in self._layers():
            layer.unmerge()

    def merge_and_unload(self, adapter_names: list[str] | None = None) -> nn.Module:
        """Merge, then return your model with plain layers again (no adapter code left)."""
        self.merge_adapter(adapter_names)
        return self._unload(merged=adapter_names or self.active_adapters)

    def unload(self) -> nn.Module:
        """Return your model without adapters, with its original weights."""
        self.unmerge_adapter()
        return self._unload(merged=[])

    def _unload(self, merged: list[str]) -> nn.Module:
        model = self.get_base_model()
        for name, w in self._wrappers():
            if isinstance(w, AdapterLayer):
                if not merged:
                    w.restore_base_weight()
                replace_module(model, name, w.base_layer)
            else:   # a merged model keeps the merged adapter's trained copy, an unloaded one the original
                kept = [w.modules_to_save[a] for a in merged if a in w]
                replace_module(model, name, kept[0] if kept else w.original_module)
        if "prompt_encoder" in self._modules:
            del self.prompt_encoder
        self.peft_config, self._active_adapter = {}, None
        return model

    # --- counting --------------------------------------------------------------------------
    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        counts = parameter_counts(self)
        return counts["trainable"], counts["total"]

    def print_trainable_parameters(self) -> None:
        trainable, total = self.get_nb_trainable_parameters()
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || "
              f"trainable%: {100 * trainable / max(total, 1):.4f}")

    # --- saving and loading (the file format is in hf_format.py) ----------------------------
    def save_pretrained(self, save_directory, selected_adapters: list[str] | None = None) -> None:
        """One PEFT folder per adapter: "default" at `save_directory`, others in subfolders."""
        for name in selected_adapters or list(self.peft_config):
            self._check_name(name)
            folder = Path(save_directory) if name == "default" else Path(save_directory) / name
            save_adapter(self, name, folder)

    @classmethod
    def from_pretrained(cls, model: nn.Module, model_id, adapter_name: str = "default",
                        is_trainable: bool = False, config: PeftConfig | None = None) -> "PeftModel":
        """Wrap `model` with the adapter saved in folder `model_id` (by peftlab or peft).
        If loading fails, `model` is left as it was."""
        config, tensors = read_adapter(model_id, is_trainable, config)
        peft_model = cls(model, config, adapter_name)
        try:
            load_adapter_weights(peft_model, adapter_name, tensors, model_id)
        except Exception:
            peft_model.unload()
            raise
        if not is_trainable:
            peft_model.eval()
        return peft_model

    def load_adapter(self, model_id, adapter_name: str, is_trainable: bool = False) -> None:
        """Add the adapter saved in folder `model_id` under `adapter_name` (not activated)."""
        config, tensors = read_adapter(model_id, is_trainable)
        self.add_adapter(adapter_name, config)
        try:
            load_adapter_weights(self, adapter_name, tensors, model_id)
        except Exception:
            self.delete_adapter(adapter_name)
            raise


def get_peft_model(model: nn.Module, peft_config: PeftConfig, adapter_name: str = "default",
                   tokenizer=None) -> PeftModel:
    """Wrap `model` (in place) with a new adapter described by `peft_config`. `tokenizer`: only
    for prompt tuning's TEXT init (turns prompt_tuning_init_text into tokens)."""
    return PeftModel(model, peft_config, adapter_name, tokenizer=tokenizer)
