"""Adapter configs: one dataclass per method, with Hugging Face `peft`'s field names.

A config is a plain record of choices (rank, targets, scaling...). It round-trips through
JSON (`to_dict` / `from_dict`, `save_pretrained` / `from_pretrained`) as the
`adapter_config.json` of a PEFT adapter folder, readable by `peft` itself.

Every config class registers itself under its `peft_type` string ("LORA", "IA3", ...), so a
folder's `adapter_config.json` finds its class, and a new method plugs in by defining a
dataclass with `@register_config`. Layer-wrapping methods (LoRA, IA3, VeRA, LoHa, LoKr,
AdaLoRA, BitFit, bottleneck adapters) derive from `LayerMethodConfig`; soft-prompt methods
(prompt tuning, P-tuning, prefix tuning) derive from `PromptLearningConfig`
(`is_prompt_learning = True`), wrap no layer, and live in peftlab/tuners/ with their configs.

Reading a folder written by `peft` (which has ~40 LoRA fields): fields peftlab does not know
are ignored when they are empty or off, and refused when they are set, because loading them
silently would compute something other than what was trained (e.g. `rank_pattern`).
"""
import json
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import ClassVar

CONFIG_NAME = "adapter_config.json"
CONFIG_REGISTRY: dict[str, type["PeftConfig"]] = {}

# Fields that `peft` writes and that never change the math of a loaded adapter.
HARMLESS_PEFT_FIELDS = {"peft_version", "auto_mapping", "revision", "megatron_core",
                        "qalora_group_size", "runtime_config", "ensure_weight_tying"}


class TaskType(str, Enum):
    """peft's task names. A str Enum, so `TaskType.CAUSAL_LM == "CAUSAL_LM"` and it saves as text."""
    CAUSAL_LM = "CAUSAL_LM"
    SEQ_CLS = "SEQ_CLS"
    TOKEN_CLS = "TOKEN_CLS"
    SEQ_2_SEQ_LM = "SEQ_2_SEQ_LM"
    QUESTION_ANS = "QUESTION_ANS"
    FEATURE_EXTRACTION = "FEATURE_EXTRACTION"


def register_config(cls):
    """Class decorator: make `cls` the config of `cls.peft_type` (used when reading JSON)."""
    CONFIG_REGISTRY[cls.peft_type] = cls
    return cls


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

    @property
    def rewrites_base_weights(self) -> bool:
        """Does creating this adapter change the base model's weights (e.g. PiSSA's init)?"""
        return False

    def to_dict(self) -> dict:
        return {"peft_type": self.peft_type, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "PeftConfig":
        """Build the config `data["peft_type"]` names (any registered method when called on
        PeftConfig itself, or exactly `cls` when called on a method's config class)."""
        peft_type = data.get("peft_type")
        if peft_type not in CONFIG_REGISTRY:
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

    def save_pretrained(self, save_directory) -> None:
        path = Path(save_directory)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_NAME).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

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


@dataclass
class LayerMethodConfig(PeftConfig):
    """Fields of the methods that wrap existing layers: which layers, and what else trains.

    target_modules: a list of names, each matching a module's full name or its last dotted
        parts ("q_proj" matches "model.layers.0.self_attn.q_proj"); or one string, a regular
        expression that must match a full name; or "all-linear" (every Linear / Conv1D but the
        output head). None: a default for known architectures (see `inject.DEFAULT_TARGETS`).
    exclude_modules: same syntax; matching modules are never wrapped.
    layers_to_transform / layers_pattern: only wrap modules of these layer indices; the index
        is the number in the module name after `layers_pattern` (default: after the first
        name inside the model, as in ".layers.3." or ".h.3.").
    modules_to_save: modules trained in full and saved with the adapter (e.g. a new
        classification head "classifier"), as extra named copies.
    """
    target_modules: list[str] | str | None = None
    exclude_modules: list[str] | str | None = None
    layers_to_transform: list[int] | int | None = None
    layers_pattern: list[str] | str | None = None
    modules_to_save: list[str] | None = None

    def __post_init__(self):
        super().__post_init__()
        # JSON has no sets; peft writes target_modules as a (set turned) list. Keep lists.
        for name in ("target_modules", "exclude_modules", "modules_to_save", "layers_pattern"):
            value = getattr(self, name)
            if isinstance(value, (set, tuple)):
                setattr(self, name, sorted(value))
        if self.layers_to_transform is not None and isinstance(self.target_modules, str) \
                and self.target_modules != "all-linear":
            raise ValueError("layers_to_transform cannot be combined with a regex target_modules "
                             "(as in peft); put the layer numbers into the regular expression.")


@dataclass
class PromptLearningConfig(PeftConfig):
    """Fields of the soft-prompt methods (prompt tuning, P-tuning, prefix tuning), as in peft.

    These methods wrap no layer: they add `num_virtual_tokens` learned vectors in front of
    every input (see peftlab/soft_prompts.py). The other fields describe the base model's
    geometry, so that a saved adapter can be rebuilt without the model; `get_peft_model`
    fills them from the model's config when they are None:
    token_dim: width of one virtual token (the hidden size; for prefix tuning on a model with
        grouped-query attention, num_key_value_heads * head_dim, the width of a key).
    num_attention_heads: heads (for prefix tuning: key/value heads).   num_layers: layers.
    num_transformer_submodules: 1 for a decoder-only model (peft writes 2 for encoder-decoders).
    """
    is_prompt_learning: ClassVar[bool] = True

    num_virtual_tokens: int | None = None
    token_dim: int | None = None
    num_transformer_submodules: int | None = None
    num_attention_heads: int | None = None
    num_layers: int | None = None

    def __post_init__(self):
        super().__post_init__()
        n = self.num_virtual_tokens
        if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
            raise ValueError(f"num_virtual_tokens must be a positive integer (e.g. 8), got {n!r}.")

    @property
    def saves_encoder_output(self) -> bool:
        """True when the trained weights are a network whose *output* is what gets saved (peft's
        format), so a saved folder can be used but not trained further through that network."""
        return False


LORA_INITS = (True, False, "gaussian", "pissa")


@register_config
@dataclass
class LoraConfig(LayerMethodConfig):
    """LoRA (Hu et al. 2021, arXiv:2106.09685) and its variants, as in `peft.LoraConfig`.

    r: rank of the update B @ A.   lora_alpha: the update is scaled by lora_alpha / r, or by
    lora_alpha / sqrt(r) with use_rslora (rank-stabilized LoRA, arXiv:2312.03732).
    use_dora: DoRA, weight-decomposed LoRA (arXiv:2402.09353), see tuners/dora.py.
    init_lora_weights: True = A Kaiming-uniform, B = 0 (the update starts at zero);
        "gaussian" = A ~ N(0, 1/r), B = 0; "pissa" = A, B from the top-r singular vectors of W
        (arXiv:2404.02948; rewrites the base weight, see tuners/lora.py); False = A and B both
        random, so the adapter changes the output from the start (useful in tests only).
    bias: "none", "all" (train every bias of the model) or "lora_only" (biases of the wrapped
        layers). Trained biases are base weights: disabling the adapter does not undo them.
    fan_in_fan_out: True when the base layer stores its weight as (in, out), like GPT-2's
        Conv1D. peftlab detects Conv1D and sets it, with a warning, as peft does.
    """
    peft_type: ClassVar[str] = "LORA"

    r: int = 8
    lora_alpha: float = 8
    lora_dropout: float = 0.0
    fan_in_fan_out: bool = False
    bias: str = "none"
    use_rslora: bool = False
    use_dora: bool = False
    init_lora_weights: bool | str = True

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.r, int) or self.r <= 0:
            raise ValueError(f"r must be a positive integer, got {self.r!r}.")
        if self.bias not in ("none", "all", "lora_only"):
            raise ValueError(f"bias must be 'none', 'all' or 'lora_only', got {self.bias!r}.")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}.")
        if self.init_lora_weights not in LORA_INITS or isinstance(self.init_lora_weights, int) \
                and not isinstance(self.init_lora_weights, bool):
            raise ValueError(f"init_lora_weights={self.init_lora_weights!r} is not implemented in peftlab; "
                             f"choose one of {', '.join(map(repr, LORA_INITS))}.")

    @property
    def rewrites_base_weights(self) -> bool:
        return self.init_lora_weights == "pissa"
