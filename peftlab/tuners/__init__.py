"""PEFT methods, one module per method, and the two families they belong to; importing registers them.

The core (read docs/ARCHITECTURE.md for the tour):
- tuner.py: BaseTuner, what PeftModel hands every call to; registry.py: peft_type -> tuner;
- layer methods (wrap existing layers): layer_tuner.py (the family), layer_config.py (what their
  configs share), layer.py (the layer contract and the base-weight seam), wrapper.py /
  modules_to_save.py (bookkeeping, full copies);
- soft prompts (add virtual tokens, wrap nothing): prompt_learning.py (the family),
  soft_prompts.py (virtual tokens in forward and generate).
The methods: lora.py (LoRA, rsLoRA), dora.py (the DoRA variant), pissa.py (PiSSA init), adalora.py
(AdaLoRA; its rank budget: adalora_allocator.py), ia3.py,
loha.py and lokr.py (LoHa, LoKr; what they share: lycoris.py), bottleneck.py (Houlsby, Pfeiffer and
parallel adapters), bitfit.py, ln_tuning.py, vera.py (VeRA); prompt_tuning.py,
p_tuning.py, prefix_tuning.py (also P-tuning v2).
"""
from . import (  # noqa: F401  (register them)
    adalora,
    bitfit,
    bottleneck,
    ia3,
    ln_tuning,
    loha,
    lokr,
    lora,
    p_tuning,
    prefix_tuning,
    prompt_tuning,
    vera,
)
from .adalora import AdaLoraConfig, AdaLoraModel
from .bitfit import BitFitConfig, BitFitModel
from .bottleneck import BottleneckConfig, BottleneckModel
from .ia3 import IA3Config, IA3Model
from .layer import BaseTunerLayer
from .layer_config import LayerMethodConfig
from .layer_tuner import LayerTuner
from .ln_tuning import LNTuningConfig, LNTuningModel
from .loha import LoHaConfig, LoHaModel
from .lokr import LoKrConfig, LoKrModel
from .lora import LoraConfig, LoraModel
from .modules_to_save import ModulesToSaveWrapper
from .p_tuning import PromptEncoderConfig, PromptEncoderReparameterizationType
from .prefix_tuning import PrefixTuningConfig
from .prompt_learning import PromptLearningConfig, PromptLearningTuner, SoftPromptEncoder
from .prompt_tuning import PromptTuningConfig, PromptTuningInit
from .registry import TUNERS, register_method, tuner_for
from .tuner import BaseTuner
from .vera import VeraConfig, VeraModel

__all__ = ["BaseTuner", "BaseTunerLayer", "LayerMethodConfig", "LayerTuner", "ModulesToSaveWrapper",
           "PromptLearningConfig", "PromptLearningTuner", "SoftPromptEncoder", "TUNERS", "register_method",
           "tuner_for", "LoraConfig", "LoraModel", "IA3Config", "IA3Model", "LNTuningConfig", "LNTuningModel",
           "AdaLoraConfig", "AdaLoraModel",
           "LoHaConfig", "LoHaModel", "LoKrConfig", "LoKrModel",
           "BitFitConfig", "BitFitModel", "BottleneckConfig", "BottleneckModel", "PromptTuningConfig",
           "PromptTuningInit", "PromptEncoderConfig", "PromptEncoderReparameterizationType",
           "PrefixTuningConfig", "VeraConfig", "VeraModel"]
