"""Which tuner runs which method: `peft_type` -> tuner class (a subclass of a family's tuner).

A method plugs in with one decorator on its tuner class:

    @register_method
    class IA3Model(LayerTuner):
        config_class = IA3Config                 # registered too, so adapter_config.json finds it
        layers = {nn.Linear: IA3Linear}          # what it wraps (layer methods)
        default_targets = {"llama": [...]}

and `get_peft_model`, `PeftModel.from_pretrained` and `PeftConfig.from_pretrained` know it.
"""
from peftlab.config import register_config

TUNERS: dict[str, type] = {}


def register_method(tuner_class: type) -> type:
    """Class decorator: make `tuner_class` run the method of `tuner_class.config_class`."""
    config_class = register_config(tuner_class.config_class)
    TUNERS[config_class.peft_type] = tuner_class
    return tuner_class


def tuner_for(peft_type: str) -> type:
    if peft_type not in TUNERS:
        raise ValueError(f"peftlab cannot run {peft_type} adapters; it implements: {', '.join(sorted(TUNERS))}.")
    return TUNERS[peft_type]
