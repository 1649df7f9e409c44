"""LoRA's config, and peft's table of LoRA's default targets: shared by LoRA (lora.py), AdaLoRA
(whose config extends LoRA's, as in peft) and the methods whose defaults peft takes from LoRA's
table (LoHa, LoKr, VeRA). A module of shared pieces, so that no method file imports another."""
from dataclasses import dataclass, field
from typing import ClassVar

from .layer_config import LayerMethodConfig, LayerSelection, check_ranks

# Targets used when target_modules is None: a subset of peft's table for LoRA, which peft also
# uses for LoHa and LoKr; VeRA's adds phi.
LORA_DEFAULT_TARGETS = {
    "llama": ["q_proj", "v_proj"], "qwen2": ["q_proj", "v_proj"], "qwen3": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"], "gemma": ["q_proj", "v_proj"], "opt": ["q_proj", "v_proj"],
    "gpt2": ["c_attn"], "bert": ["query", "value"], "roberta": ["query", "value"],
    "gpt_neox": ["query_key_value"],
}

LORA_INITS = (True, False, "gaussian", "pissa")


@dataclass
class LoraConfig(LayerSelection, LayerMethodConfig):
    """LoRA and its variants, as `peft.LoraConfig`.

    r: rank of the update B @ A.   lora_alpha: the update is scaled by lora_alpha / r, or by
    lora_alpha / sqrt(r) with use_rslora (rank-stabilized LoRA).
    rank_pattern / alpha_pattern: {pattern: value} overriding r / lora_alpha for the modules
        whose name ends with the pattern (a regular expression), e.g. {"down_proj": 16}.
    use_dora: DoRA, weight-decomposed LoRA (arXiv:2402.09353), see tuners/dora.py.
    init_lora_weights: True = A Kaiming-uniform, B = 0 (the update starts at zero);
        "gaussian" = A ~ N(0, 1/r), B = 0; "pissa" = A, B from the top-r singular vectors of W
        (arXiv:2404.02948; rewrites the base weight, see tuners/pissa.py); False = A and B both
        random, so the adapter changes the output from the start (useful in tests only).
    bias: "none", "all" (train every bias of the model) or "lora_only" (biases of the wrapped
        layers). Trained biases are base weights: disabling the adapter does not undo them.
    fan_in_fan_out: True when the base layer stores its weight as (in, out), like GPT-2's
        Conv1D. peftlab detects Conv1D and records it in the adapter's config, as peft does.
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
    rank_pattern: dict = field(default_factory=dict)
    alpha_pattern: dict = field(default_factory=dict)

    def __post_init__(self):
        super().__post_init__()
        self.check_layer_selection()
        check_ranks(self.r, self.rank_pattern)
        if self.bias not in ("none", "all", "lora_only"):
            raise ValueError(f"bias must be 'none', 'all' or 'lora_only', got {self.bias!r}.")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}.")
        if self.init_lora_weights not in LORA_INITS or isinstance(self.init_lora_weights, int) \
                and not isinstance(self.init_lora_weights, bool):
            raise ValueError(f"init_lora_weights={self.init_lora_weights!r} is not implemented in peftlab; "
                             f"choose one of {', '.join(map(repr, LORA_INITS))}.")
