"""PEFT methods, one module per method, and the two families they belong to.

Every module in this folder is imported here, so a method registers itself (`@register_method`
on its tuner) and is exported from `peftlab` without being named anywhere else: adding a method
is adding its file (and one row in tests/conformance_rows.py). What a module exports is its
`__all__`; a method module without one exports its config and tuner classes.

The core (read docs/ARCHITECTURE.md for the tour):
- tuner.py: BaseTuner, what PeftModel hands every call to; registry.py: peft_type -> tuner;
  targeting.py: which layers a config selects, and swapping a layer for its wrapper;
- layer methods (wrap existing layers): layer_tuner.py (the family), layer_config.py (what their
  configs share), layer.py (the layer contract and the base-weight seam), wrapper.py /
  modules_to_save.py (bookkeeping, full copies);
- soft prompts (add virtual tokens, wrap nothing): prompt_learning.py (the family),
  soft_prompts.py (virtual tokens in forward and generate).
The methods: lora.py (LoRA, rsLoRA; its config: lora_config.py), dora.py (the DoRA variant),
pissa.py (PiSSA init), adalora.py (AdaLoRA; its rank budget: adalora_allocator.py), ia3.py,
loha.py and lokr.py (LoHa, LoKr; what they share: lycoris.py), bottleneck.py (Houlsby, Pfeiffer and
parallel adapters), bitfit.py, ln_tuning.py, vera.py (VeRA); prompt_tuning.py,
p_tuning.py, prefix_tuning.py (also P-tuning v2).
"""
import importlib
import pkgutil

from .registry import TUNERS, register_method, tuner_for

__all__ = ["TUNERS", "register_method", "tuner_for"]


def _export(names, module) -> None:
    for name in names:
        globals()[name] = getattr(module, name)
        if name not in __all__:
            __all__.append(name)


for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    _module = importlib.import_module(f"{__name__}.{_info.name}")
    _export(getattr(_module, "__all__", ()), _module)
for _tuner in TUNERS.values():   # a method file without __all__: its config and its tuner
    _export([_tuner.config_class.__name__, _tuner.__name__], importlib.import_module(_tuner.__module__))
del _info, _module, _tuner
