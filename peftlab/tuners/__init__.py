"""PEFT methods that wrap layers, one module per family; importing registers them.

base.py: what every method shares (named adapters, merge, mixed batches, modules_to_save).
lora.py: LoRA, rsLoRA, PiSSA init; dora.py: DoRA's arithmetic.
"""
from . import lora  # noqa: F401  (registers "LORA")
from .base import LAYER_METHODS, AdapterLayer, ModulesToSaveWrapper, register_layer_method

__all__ = ["LAYER_METHODS", "AdapterLayer", "ModulesToSaveWrapper", "register_layer_method"]
