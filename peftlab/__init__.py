"""peftlab: Parameter-Efficient Fine-Tuning, built from scratch to be read and learned.

The public API mirrors Hugging Face `peft` on purpose: code written against one runs against
the other by changing the import. This package is the library; it imports nothing from the two
floors built on it: `peftlab.workbook` (data, bundled models, the training loop, measuring) and
`peftlab.course` (exercises, experiments, plots, widgets). docs/ARCHITECTURE.md explains how the
library is built and how a new method plugs in (the extension points are exported here too).

Every method's config (LoraConfig, IA3Config, PromptTuningConfig...) and tuner is exported by
its own file in peftlab/tuners/, so a new method file appears here without an edit.
"""
from peftlab import tuners
from peftlab.config import PeftConfig, PeftType, TaskType
from peftlab.counting import parameter_counts
from peftlab.hf_format import get_peft_model_state_dict, set_peft_model_state_dict
from peftlab.lora_plus import create_loraplus_param_groups
from peftlab.model import PeftModel, get_peft_model

globals().update({name: getattr(tuners, name) for name in tuners.__all__})

__all__ = [
    "get_peft_model", "PeftModel", "PeftConfig", "PeftType", "TaskType", "get_peft_model_state_dict",
    "set_peft_model_state_dict", "create_loraplus_param_groups", "parameter_counts",
    # every method's config and tuner, the families' bases and register_method (the extension points)
    *tuners.__all__,
]
