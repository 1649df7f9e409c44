"""PEFT methods, one module per family; importing registers them.

Layer methods (wrap existing layers): base.py is what they share (named adapters, merge, mixed
batches, modules_to_save); lora.py: LoRA, rsLoRA, PiSSA init; dora.py: DoRA's arithmetic.
Soft-prompt methods (add virtual tokens, wrap nothing): prompt_base.py is what they share;
prompt_tuning.py, p_tuning.py, prefix_tuning.py (also P-tuning v2). How a model runs them is
in peftlab/soft_prompts.py.
"""
from . import lora, p_tuning, prefix_tuning, prompt_tuning  # noqa: F401  (register their methods)
from .base import LAYER_METHODS, AdapterLayer, ModulesToSaveWrapper, register_layer_method
from .p_tuning import PromptEncoderConfig, PromptEncoderReparameterizationType
from .prefix_tuning import PrefixTuningConfig
from .prompt_base import PROMPT_METHODS, SoftPromptEncoder, register_prompt_method
from .prompt_tuning import PromptTuningConfig, PromptTuningInit

__all__ = ["LAYER_METHODS", "AdapterLayer", "ModulesToSaveWrapper", "register_layer_method",
           "PROMPT_METHODS", "SoftPromptEncoder", "register_prompt_method", "PromptTuningConfig",
           "PromptTuningInit", "PromptEncoderConfig", "PromptEncoderReparameterizationType",
           "PrefixTuningConfig"]
