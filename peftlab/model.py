"""PeftModel: a base model plus named adapters, with peft's API.

`get_peft_model(model, config)` adapts `model` *in place* (as peft does: no copy of a large
model) and returns a PeftModel around it. The nesting is peft's, PeftModel.base_model.model is
your model, so attribute paths and state-dict keys read the same in both libraries. Everything
else (`.config`, `.generation_config`...) is read from your model.

PeftModel knows no method. `base_model` is the method's *tuner* (tuners/tuner.py: LoraModel,
IA3Model, PromptTuningModel...), chosen from the config's `peft_type`, and every call below is
handed to it. One PeftModel holds adapters of one method, each under a name ("default" first);
one is active at a time, and only its parameters require grad.
"""
from pathlib import Path

from torch import nn

from peftlab.config import PeftConfig
from peftlab.counting import parameter_counts
from peftlab.hf_format import check_sizes, read_adapter, save_adapter, set_peft_model_state_dict
from peftlab.tuners.registry import tuner_for
from peftlab.tuners.targeting import refuse_double_injection
from peftlab.tuners.wrapper import PassThrough


class PeftModel(PassThrough):
    """Your model (`get_base_model()`) with named adapters; see the module docstring."""
    _inner = "base_model"

    def __init__(self, model: nn.Module, peft_config: PeftConfig, adapter_name: str = "default", tokenizer=None):
        self._wrap(model, peft_config.peft_type)
        self.base_model.add_adapter(adapter_name, peft_config, tokenizer=tokenizer)
        self.set_adapter(adapter_name)

    def _wrap(self, model: nn.Module, peft_type: str) -> None:
        """Hold `model` in the tuner of `peft_type`, with no adapter yet (what both constructors share)."""
        super().__init__()
        refuse_double_injection(model)
        self.base_model = tuner_for(peft_type)(model)
        self.training = model.training     # wrapping never changes the mode: eval stays eval

    # --- the model and its adapters --------------------------------------------------------
    def get_base_model(self) -> nn.Module:
        return self.base_model.model

    @property
    def peft_config(self) -> dict[str, PeftConfig]:
        return self.base_model.peft_config

    @property
    def active_adapter(self) -> str | None:
        return self.base_model.active_adapter

    @property
    def active_adapters(self) -> list[str]:
        return [self.active_adapter] if self.active_adapter else []

    def add_adapter(self, adapter_name: str, peft_config: PeftConfig, tokenizer=None) -> None:
        """Add an adapter (not activated). `tokenizer`: for prompt tuning's TEXT init only."""
        self.base_model.add_adapter(adapter_name, peft_config, tokenizer=tokenizer)

    def set_adapter(self, adapter_name: str) -> None:
        """Make `adapter_name` the adapter that runs (and trains)."""
        self.base_model.set_adapter(adapter_name)

    def delete_adapter(self, adapter_name: str) -> None:
        """Remove an adapter everywhere; the first remaining one becomes active."""
        self.base_model.delete_adapter(adapter_name)

    # --- running ---------------------------------------------------------------------------
    def forward(self, *args, adapter_names: list[str] | None = None, **kwargs):
        """The base model's forward (labels and all), adapted. `adapter_names`, one per example,
        runs each example through its own adapter ("__base__": none) in one batch."""
        return self.base_model(*args, adapter_names=adapter_names, **kwargs)

    def generate(self, *args, adapter_names: list[str] | None = None, **kwargs):
        return self.base_model.generate(*args, adapter_names=adapter_names, **kwargs)

    def disable_adapter(self):
        """`with model.disable_adapter():` inside the block the model is exactly the base model."""
        return self.base_model.disable_adapter()

    # --- merging ---------------------------------------------------------------------------
    def merge_adapter(self, adapter_names: list[str] | None = None, exact_unmerge: bool = False) -> None:
        """Fold adapters (default: the active one) into the base weights. Merging an adapter that
        is already merged does nothing. `exact_unmerge=True` keeps a copy of each merged weight so
        that unmerge_adapter restores it bit for bit (it costs that copy's memory); by default
        unmerging subtracts again, exact up to float rounding, as in peft."""
        names = adapter_names or self.active_adapters
        for name in names:
            self.base_model.check_name(name)
        self.base_model.merge_adapter(names, exact_unmerge=exact_unmerge)

    def add_weighted_adapter(self, adapters: list[str], weights: list[float], adapter_name: str,
                             combination_type: str = "svd", **options) -> None:
        """Add adapter `adapter_name` (not activated) combining `adapters` with `weights`, for
        methods that can (LoRA: "svd", "linear", "cat", "ties", "dare_linear"...; its options and
        rules in tuners/lora_merging.py)."""
        combine = getattr(type(self.base_model), "add_weighted_adapter", None)
        if combine is None:
            raise ValueError(f"{type(self.base_model).__name__} adapters cannot be combined with "
                             "add_weighted_adapter; peftlab implements it for LoRA only (peft also for IA3).")
        combine(self.base_model, adapters, weights, adapter_name, combination_type, **options)

    def unmerge_adapter(self) -> None:
        """Take merged adapters out of the base weights again."""
        self.base_model.unmerge_adapter()

    def merge_and_unload(self, adapter_names: list[str] | None = None) -> nn.Module:
        """Merge, then return your model with plain layers again (no adapter code left)."""
        self.merge_adapter(adapter_names)
        return self.base_model.unload(merged=adapter_names or self.active_adapters)

    def unload(self) -> nn.Module:
        """Return your model without adapters, with its original weights."""
        self.base_model.unmerge_adapter()
        return self.base_model.unload(merged=[])

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
            self.base_model.check_name(name)
            folder = Path(save_directory) if name == "default" else Path(save_directory) / name
            save_adapter(self, name, folder)

    @classmethod
    def from_pretrained(cls, model: nn.Module, model_id, adapter_name: str = "default",
                        is_trainable: bool = False, config: PeftConfig | None = None) -> "PeftModel":
        """Wrap `model` with the adapter saved in folder `model_id` (by peftlab or peft).
        If loading fails, `model` is left as it was."""
        config, tensors = read_adapter(model_id, is_trainable, config)
        check_sizes(config, tensors, model)
        peft_model = cls.__new__(cls)   # the adapter comes from the folder, not from a fresh init
        peft_model._wrap(model, config.peft_type)
        try:
            peft_model._add_saved_adapter(adapter_name, config, tensors)
        except Exception:
            peft_model.unload()
            raise
        peft_model.set_adapter(adapter_name)
        if not is_trainable:
            peft_model.eval()
        return peft_model

    def load_adapter(self, model_id, adapter_name: str, is_trainable: bool = False) -> None:
        """Add the adapter saved in folder `model_id` under `adapter_name` (not activated)."""
        config, tensors = read_adapter(model_id, is_trainable)
        check_sizes(config, tensors, self.get_base_model())
        self._add_saved_adapter(adapter_name, config, tensors)

    def _add_saved_adapter(self, adapter_name: str, config: PeftConfig, tensors: dict) -> None:
        """Create the adapter in the form the folder stores, fill it, or leave no trace of it."""
        self.base_model.add_adapter(adapter_name, config, for_loading=True)
        try:
            set_peft_model_state_dict(self, tensors, adapter_name)
        except Exception:
            self.delete_adapter(adapter_name)
            raise
        self.base_model.finish_load(adapter_name)


def get_peft_model(model: nn.Module, peft_config: PeftConfig, adapter_name: str = "default",
                   tokenizer=None) -> PeftModel:
    """Wrap `model` (in place) with a new adapter described by `peft_config`. `tokenizer`: only
    for prompt tuning's TEXT init (turns prompt_tuning_init_text into tokens)."""
    return PeftModel(model, peft_config, adapter_name, tokenizer=tokenizer)
