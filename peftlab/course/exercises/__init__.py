"""Checkers for the notebooks' exercises, one module per notebook.

A checker never raises on a wrong answer: it prints what it found and a hint, and returns
True/False. An untouched stub (the answer is still `None`, or the function still raises
NotImplementedError) prints "not attempted yet", so the notebook runs end to end as shipped.
"""
from . import (
    nb00_welcome,
    nb01_full_finetuning,
    nb02_lora_from_scratch,
    nb03_lora_on_a_transformer,
    nb04_inside_lora,
    nb05_lora_variants,
    nb06_adalora,
    nb07_adapters_ia3_bitfit,
    nb08_prompt_tuning,
    nb09_p_tuning,
    nb10_prefix_tuning,
    nb11_qlora,
    nb12_unified_view,
    nb13_many_adapters,
    nb14_graduation,
    nb15_peft_for_images,
    nb16_when_peft_goes_wrong,
)
from .checking import NOT_ATTEMPTED, attempted

__all__ = ["nb00_welcome", "nb01_full_finetuning", "nb02_lora_from_scratch", "nb03_lora_on_a_transformer",
           "nb04_inside_lora", "nb05_lora_variants", "nb06_adalora", "nb07_adapters_ia3_bitfit", "nb08_prompt_tuning", "nb09_p_tuning", "nb10_prefix_tuning",
           "nb11_qlora", "nb12_unified_view", "nb13_many_adapters", "nb14_graduation", "nb15_peft_for_images", "nb16_when_peft_goes_wrong",
           "NOT_ATTEMPTED", "attempted"]
