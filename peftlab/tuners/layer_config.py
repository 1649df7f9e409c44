"""What the configs of layer methods share: which layers to wrap, and what else trains.

A method's config (LoraConfig, IA3Config...) derives from LayerMethodConfig, and adds
LayerSelection when peft's config of that method has `layers_to_transform` (so a saved
adapter_config.json has exactly the fields peft expects).
"""
import re
from dataclasses import dataclass

from peftlab.config import PeftConfig

__all__ = ["LayerMethodConfig"]


@dataclass
class LayerMethodConfig(PeftConfig):
    """Fields of the methods that wrap existing layers: which layers, and what else trains.

    target_modules: a list of names, each matching a module's full name or its last dotted
        parts ("q_proj" matches "model.layers.0.self_attn.q_proj"); or one string, a regular
        expression that must match a full name; or "all-linear" (every linear layer the method
        can wrap but the output head). None: the method's default for known architectures.
    exclude_modules: same syntax; matching modules are never wrapped.
    modules_to_save: modules trained in full and saved with the adapter (e.g. a new
        classification head "classifier"), as extra named copies.
    A method whose peft config has them adds `layers_to_transform` / `layers_pattern`
    (LayerSelection below), so that its saved config has exactly peft's fields.
    """
    target_modules: list[str] | str | None = None
    exclude_modules: list[str] | str | None = None
    modules_to_save: list[str] | None = None

    def __post_init__(self):
        # JSON has no sets; peft writes target_modules as a (set turned) list. Keep lists.
        for name in ("target_modules", "exclude_modules", "modules_to_save", "layers_pattern"):
            value = getattr(self, name, None)
            if isinstance(value, (set, frozenset, tuple)):
                setattr(self, name, sorted(value) if all(isinstance(v, str) for v in value) else list(value))
        if isinstance(self.modules_to_save, str):   # one module's name, as peft users write it
            self.modules_to_save = [self.modules_to_save]
        super().__post_init__()   # every field's type
        for name in ("target_modules", "exclude_modules"):
            pattern = getattr(self, name)
            if isinstance(pattern, str) and pattern != "all-linear":
                try:
                    re.compile(pattern)
                except re.error as err:
                    raise ValueError(f"{name}={pattern!r} is one string, so it is read as a regular expression "
                                     f"(matched against whole module names), and it does not compile: {err}. "
                                     f"For module names, pass a list: {name}=[...].") from None


@dataclass
class LayerSelection:
    """Two more target fields (a mixin for configs, peft's names):
    layers_to_transform / layers_pattern: only wrap modules of these layer indices; the index
        is the number in the module name after `layers_pattern` (default: after the first
        name inside the model, as in ".layers.3." or ".h.3.")."""
    layers_to_transform: list[int] | int | None = None
    layers_pattern: list[str] | str | None = None

    def check_layer_selection(self, pattern_needs_layers: bool = False) -> None:
        """`pattern_needs_layers`: refuse layers_pattern without layers_to_transform, for the methods
        whose peft config refuses it (OFT, HRA, FourierFT)."""
        if self.layers_to_transform is not None and isinstance(self.target_modules, str) \
                and self.target_modules != "all-linear":
            raise ValueError("layers_to_transform cannot be combined with a regex target_modules "
                             "(as in peft); put the layer numbers into the regular expression.")
        if pattern_needs_layers and self.layers_pattern and self.layers_to_transform is None:
            raise ValueError("layers_pattern only says where to read the layer index for layers_to_transform; "
                             "set layers_to_transform too (as peft requires), or drop layers_pattern.")


def check_ranks(r, rank_pattern: dict | None) -> None:
    """r and every rank_pattern value must be positive integers (True is not a rank)."""
    ranks = [r, *(rank_pattern or {}).values()]
    if any(not isinstance(rank, int) or isinstance(rank, bool) or rank <= 0 for rank in ranks):
        raise ValueError(f"r (and every rank_pattern value) must be a positive integer, got {ranks}.")


def pattern_value(patterns: dict, module_name: str, default):
    """The value of the first key of `patterns` that matches the end of `module_name` (peft's
    rank_pattern rule: "q_proj" and "layers.0.self_attn.q_proj" both match that layer)."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module_name):
            return value
    return default
