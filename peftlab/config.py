"""Adapter configs: one dataclass per method, with Hugging Face `peft`'s field names.

A config is a plain record of choices (rank, targets, scaling...). It round-trips through
JSON (`to_dict` / `from_dict`, `save_pretrained` / `from_pretrained`) as the
`adapter_config.json` of a PEFT adapter folder, readable by `peft` itself.

This module holds what every config shares. Each method's config lives beside the method
(peftlab/tuners/lora.py holds LoraConfig), derived from its family's base: `LayerMethodConfig`
(tuners/layer_tuner.py) for methods that wrap layers, `PromptLearningConfig`
(tuners/prompt_learning.py) for soft prompts. Registering a method (tuners/registry.py)
registers its config under its `peft_type` ("LORA", "IA3", ...), so a folder's
`adapter_config.json` finds its class.

Reading a folder written by `peft` (which has ~40 LoRA fields): fields peftlab does not know
are ignored when they are empty or off, and refused when they are set, because loading them
silently would compute something other than what was trained (e.g. `layer_replication`).
"""
import json
import math
import types
import typing
from dataclasses import asdict, dataclass, fields
from enum import Enum
from pathlib import Path
from typing import ClassVar

CONFIG_NAME = "adapter_config.json"
CONFIG_REGISTRY: dict[str, type["PeftConfig"]] = {}

# Fields that `peft` writes and that never change the math of a loaded adapter.
HARMLESS_PEFT_FIELDS = {"peft_version", "auto_mapping", "revision", "megatron_core",
                        "qalora_group_size", "runtime_config", "ensure_weight_tying"}


class PeftType(str, Enum):
    """The methods peftlab implements, by peft's names (a str Enum: PeftType.LORA == "LORA").
    BITFIT and BOTTLENECK are peftlab's own: peft has no such methods."""
    LORA = "LORA"
    ADALORA = "ADALORA"
    IA3 = "IA3"
    LOHA = "LOHA"
    LOKR = "LOKR"
    LN_TUNING = "LN_TUNING"
    VERA = "VERA"
    BITFIT = "BITFIT"
    BOTTLENECK = "BOTTLENECK"
    PROMPT_TUNING = "PROMPT_TUNING"
    P_TUNING = "P_TUNING"
    PREFIX_TUNING = "PREFIX_TUNING"


class TaskType(str, Enum):
    """peft's task names. A str Enum, so `TaskType.CAUSAL_LM == "CAUSAL_LM"` and it saves as text."""
    CAUSAL_LM = "CAUSAL_LM"
    SEQ_CLS = "SEQ_CLS"
    TOKEN_CLS = "TOKEN_CLS"
    SEQ_2_SEQ_LM = "SEQ_2_SEQ_LM"
    QUESTION_ANS = "QUESTION_ANS"
    FEATURE_EXTRACTION = "FEATURE_EXTRACTION"


# The heads a task trains in full, saved with the adapter when the model has them: peft adds these to
# modules_to_save by itself (its classifier_module_names for SEQ_CLS), so folders from peft hold them.
TASK_HEADS: dict[str, tuple[str, ...]] = {"SEQ_CLS": ("classifier", "score")}


def register_config(cls):
    """Make `cls` the config of `cls.peft_type` (used when reading JSON); see tuners/registry.py."""
    CONFIG_REGISTRY[cls.peft_type] = cls
    return cls


def _type_name(kind) -> str:
    if kind is type(None):
        return "null"
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(k) for k in typing.get_args(kind))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(kind)[0])}s"
    return {bool: "true/false", int: "an integer", float: "a finite number", str: "a string",
            dict: "an object (dict)"}.get(kind, getattr(kind, "__name__", str(kind)))


def _fits(value, kind) -> bool:
    """Does `value` have the declared type `kind`? A bool is a bool (not an int, not "false"); a
    float is finite; a list's entries have the entries' type (a tuple counts as a list)."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, k) for k in typing.get_args(kind))
    if origin is list:
        return isinstance(value, (list, tuple)) and all(_fits(v, typing.get_args(kind)[0]) for v in value)
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind is str:
        return isinstance(value, str)
    if kind is dict:
        return isinstance(value, dict)
    return True   # a type this check does not know: the method's own checks decide


def check_field_types(config) -> None:
    """Every field of `config` has its declared type: the first that does not names the field, the
    value and what is allowed (a string "false" would read as true; NaN would make every logit NaN)."""
    hints = typing.get_type_hints(type(config))
    for f in fields(config):
        value = getattr(config, f.name)
        if not _fits(value, hints[f.name]):
            raise ValueError(f"{type(config).__name__}.{f.name} = {value!r} is not allowed: it must be "
                             f"{_type_name(hints[f.name])}.")


def _is_off(value) -> bool:
    """True for the 'not used' values peft writes for features that are switched off."""
    return value is None or value is False or (isinstance(value, (dict, list, str)) and not value)


@dataclass
class PeftConfig:
    """Fields every method shares. `peft_type` is a class constant, not a field."""
    peft_type: ClassVar[str] = ""
    is_prompt_learning: ClassVar[bool] = False

    task_type: str | None = None                 # "CAUSAL_LM", "SEQ_CLS", ... (see TaskType)
    base_model_name_or_path: str | None = None   # informative: which base the adapter was trained on
    inference_mode: bool = False                 # True: load frozen (nothing requires grad)

    def __post_init__(self):
        if isinstance(self.task_type, Enum):
            self.task_type = self.task_type.value
        check_field_types(self)

    def to_dict(self) -> dict:
        return {"peft_type": self.peft_type, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "PeftConfig":
        """Build the config `data["peft_type"]` names (any registered method when called on
        PeftConfig itself, or exactly `cls` when called on a method's config class)."""
        if not isinstance(data, dict):
            raise ValueError(f"An adapter config must be a JSON object ({{\"peft_type\": ..., ...}}), "
                             f"not {type(data).__name__}: {str(data)[:80]!r}.")
        if "peft_type" not in data:
            raise ValueError(f"The adapter config has no peft_type, so its method is unknown; it must name "
                             f"one of: {', '.join(sorted(CONFIG_REGISTRY))}.")
        peft_type = data.get("peft_type")
        if not isinstance(peft_type, str) or peft_type not in CONFIG_REGISTRY:
            raise ValueError(
                f"Unknown peft_type {peft_type!r} in the adapter config. peftlab implements: "
                f"{', '.join(sorted(CONFIG_REGISTRY))}. An adapter of another method cannot be loaded here.")
        target = CONFIG_REGISTRY[peft_type]
        if cls is not PeftConfig and target is not cls:
            raise ValueError(f"This is a {peft_type} config; read it with {target.__name__}.from_dict "
                             f"(or PeftConfig.from_dict), not {cls.__name__}.from_dict.")
        known = {f.name for f in fields(target)}
        refused = {k: v for k, v in data.items()
                   if k not in known and k != "peft_type" and k not in HARMLESS_PEFT_FIELDS
                   and not _is_off(v)}
        if refused:
            listing = "; ".join(f"{k}={v!r}" for k, v in refused.items())
            raise ValueError(
                f"This {peft_type} adapter uses options peftlab does not implement: {listing}. "
                "Loading it without them would silently compute something other than what was "
                "trained, so it is refused. Use `peft` for this adapter, or retrain it without them.")
        return target(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, save_directory) -> None:
        path = Path(save_directory)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_NAME).write_text(self.to_json())

    @classmethod
    def from_pretrained(cls, directory) -> "PeftConfig":
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"No {CONFIG_NAME} in {Path(directory)}: this folder is not a "
                                    "PEFT adapter (save one with `model.save_pretrained(folder)`).")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({err}); the file is damaged.") from None
        return cls.from_dict(data)
