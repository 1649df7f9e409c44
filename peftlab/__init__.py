"""peftlab: Parameter-Efficient Fine-Tuning, built from scratch to be read and learned.

The public API mirrors Hugging Face `peft` on purpose: code written against one runs against
the other by changing the import. docs/ARCHITECTURE.md explains how the library is built and
how a new method plugs in (the extension points are exported here too).
"""
from . import evaluate
from .batching import PromptTargetCollator
from .config import PeftConfig, PeftType, TaskType
from .data import load_corpus, load_task
from .evaluate import exact_match, fact_recall, fact_recall_by_rank, label_accuracy, perplexity
from .hf_format import get_peft_model_state_dict, set_peft_model_state_dict
from .lora_plus import create_loraplus_param_groups
from .memory import memory_breakdown, parameter_counts
from .model import PeftModel, get_peft_model
from .runtime import pick_device, seed_everything, setup_notebook
from .train import History, train
from .tuners import (
    AdaLoraConfig,
    BaseTuner,
    BaseTunerLayer,
    BitFitConfig,
    BottleneckConfig,
    IA3Config,
    LayerMethodConfig,
    LayerTuner,
    LNTuningConfig,
    LoHaConfig,
    LoKrConfig,
    LoraConfig,
    ModulesToSaveWrapper,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptEncoderReparameterizationType,
    PromptLearningConfig,
    PromptLearningTuner,
    PromptTuningConfig,
    PromptTuningInit,
    SoftPromptEncoder,
    VeraConfig,
    register_method,
)
from .zoo import BASE_MODEL, load_base_model

__all__ = [
    # the workbook: model, data, training, measuring
    "BASE_MODEL", "load_base_model", "load_corpus", "load_task", "PromptTargetCollator", "train", "History",
    "evaluate", "perplexity", "label_accuracy", "exact_match", "fact_recall", "fact_recall_by_rank",
    "parameter_counts", "memory_breakdown",
    "pick_device", "seed_everything", "setup_notebook",
    # adapters, with peft's names
    "get_peft_model", "PeftModel", "PeftConfig", "PeftType", "TaskType", "get_peft_model_state_dict",
    "set_peft_model_state_dict", "LoraConfig", "IA3Config", "LoHaConfig", "LoKrConfig", "LNTuningConfig",
    "AdaLoraConfig",
    "PromptTuningConfig",
    "PromptTuningInit", "PromptEncoderConfig", "PromptEncoderReparameterizationType", "PrefixTuningConfig",
    "VeraConfig",
    # peftlab's own methods (peft has no such): same folder layout, their own peft_type
    "BitFitConfig", "BottleneckConfig",
    "create_loraplus_param_groups",
    # extension points: a new method subclasses these and registers its tuner
    "register_method", "BaseTuner", "LayerTuner", "PromptLearningTuner", "BaseTunerLayer",
    "ModulesToSaveWrapper", "SoftPromptEncoder", "LayerMethodConfig", "PromptLearningConfig",
]
