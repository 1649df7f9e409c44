"""peftlab: Parameter-Efficient Fine-Tuning, built from scratch to be read and learned.

The public API mirrors Hugging Face `peft` on purpose: code written against one runs against
the other by changing the import.
"""
from .batching import PromptTargetCollator
from .data import load_corpus, load_task
from .memory import memory_breakdown, parameter_counts
from .runtime import pick_device, seed_everything, setup_notebook
from .train import History, train
from .zoo import BASE_MODEL, load_base_model

__all__ = [
    "PromptTargetCollator", "load_corpus", "load_task", "memory_breakdown", "parameter_counts",
    "pick_device", "seed_everything", "setup_notebook", "History", "train", "BASE_MODEL",
    "load_base_model",
]

# --- adapter methods (get_peft_model, PeftModel, configs) are exported below this line ---
from .config import LoraConfig, PeftConfig, PromptLearningConfig, TaskType
from .hf_format import get_peft_model_state_dict
from .lora_plus import create_loraplus_param_groups
from .model import PeftModel, get_peft_model
from .tuners import (PrefixTuningConfig, PromptEncoderConfig, PromptEncoderReparameterizationType,
                     PromptTuningConfig, PromptTuningInit)

__all__ += ["LoraConfig", "PeftConfig", "TaskType", "get_peft_model_state_dict",
            "create_loraplus_param_groups", "PeftModel", "get_peft_model"]
__all__ += ["PromptLearningConfig", "PromptTuningConfig", "PromptTuningInit", "PromptEncoderConfig",
            "PromptEncoderReparameterizationType", "PrefixTuningConfig"]
