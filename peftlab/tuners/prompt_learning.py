"""The family of soft-prompt methods: prompt tuning, P-tuning, prefix tuning (and P-tuning v2).

They all learn `num_virtual_tokens` vectors and change nothing in the model. They differ in
*how the vectors are produced* (a plain table, a small network over a table) and in *where they
enter* the model (as input embeddings, or as keys and values inside every attention layer). The
"where" is in tuners/soft_prompts.py; each method's module defines the "how" as a
`SoftPromptEncoder`:

    encoder() -> (num_virtual_tokens, width)      width = token_dim, or for prefix tuning
                                                  num_layers * 2 * token_dim (a key and a value per layer)

What is saved (peft's format, key "prompt_embeddings") is this *output*, not the network
behind it. So a loaded adapter is a plain table: it reproduces exactly what was trained, but a
network such as P-tuning's MLP cannot be trained further from a folder (prompt tuning and prefix
tuning without projection can: their table is all they train).

A method of this family is a subclass of PromptLearningTuner with its `config_class` and its
`encoder_class`, registered with `registry.register_method`.
"""
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from peftlab.config import PeftConfig

from . import soft_prompts
from .tuner import BaseTuner, compute_dtype

__all__ = ["PromptLearningConfig", "PromptLearningTuner", "SoftPromptEncoder"]

PROMPT_KEY = "prompt_embeddings"   # the one tensor of a soft-prompt adapter file


def is_positive_int(n) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n > 0


@dataclass
class PromptLearningConfig(PeftConfig):
    """Fields of the soft-prompt methods (prompt tuning, P-tuning, prefix tuning), as in peft.

    These methods wrap no layer: they add `num_virtual_tokens` learned vectors in front of
    every input (see tuners/soft_prompts.py). The other fields describe the base model's
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
        if not is_positive_int(self.num_virtual_tokens):
            raise ValueError("num_virtual_tokens must be a positive integer (e.g. 8), "
                             f"got {self.num_virtual_tokens!r}.")

    @property
    def saves_encoder_output(self) -> bool:
        """True when the trained weights are a network whose *output* is what gets saved (peft's
        format), so a saved folder can be used but not trained further through that network."""
        return False


class SoftPromptEncoder(nn.Module):
    """Holds `embedding`, a table with one row per virtual token (peft's name, so in-memory
    keys read `prompt_encoder.default.embedding.weight`, behind the `base_model.` prefix).

    A subclass builds its network in `build` and says how it turns the table into the
    virtual tokens in `encode`. `table_only=True` (an adapter about to be loaded from a folder)
    builds the table only: it then *is* the output.
    """

    def __init__(self, config, word_embeddings: nn.Embedding, tokenizer=None, table_only: bool = False):
        super().__init__()
        self.table_only = table_only
        weight = word_embeddings.weight
        # fp32 for fp16/bf16 bases, so small optimizer updates are not rounded away (layer.compute_dtype).
        self.factory = {"dtype": compute_dtype(weight.dtype), "device": weight.device}
        if table_only:
            self.embedding = nn.Embedding(config.num_virtual_tokens, self.output_width(config), **self.factory)
        else:
            self.build(config, word_embeddings, tokenizer)

    into_cache: ClassVar[bool] = False   # True: the tokens enter every layer as keys and values

    # --- what a method implements ---------------------------------------------------------
    @staticmethod
    def geometry(config, model: nn.Module) -> dict:
        """The config fields the model fixes (filled in when None, else checked: a saved adapter
        must fit the model). A virtual token has the width of an input embedding."""
        text = model.config.get_text_config()
        config.num_layers = config.num_layers or text.num_hidden_layers                # informative
        config.num_attention_heads = config.num_attention_heads or text.num_attention_heads
        return {"token_dim": model.get_input_embeddings().embedding_dim}

    @staticmethod
    def output_width(config) -> int:
        """Width of one output row (one virtual token)."""
        return config.token_dim

    def build(self, config, word_embeddings: nn.Embedding, tokenizer) -> None:
        """Create `self.embedding` (and any network) for training, initialised."""
        raise NotImplementedError

    def encode(self) -> torch.Tensor:
        """The virtual tokens made from `self.embedding` by the method's network."""
        raise NotImplementedError

    # --- shared ----------------------------------------------------------------------------
    def forward(self) -> torch.Tensor:
        """(num_virtual_tokens, width): the same for every example, so computed once per batch."""
        if self.table_only:
            return self.embedding.weight
        return self.encode()

    @torch.no_grad()
    def embeddings_to_save(self) -> torch.Tensor:
        """What `save_pretrained` writes under "prompt_embeddings". For a table, the live
        parameter itself (loading copies into it); for a network, its output in eval mode
        (no dropout), so the saved tokens are the ones the model uses at inference."""
        if self.table_only:
            return self.embedding.weight
        was_training = self.training
        self.eval()
        try:
            return self.encode().detach()
        finally:
            self.train(was_training)


class PromptLearningTuner(BaseTuner):
    """Soft prompts: one encoder per adapter in `prompt_encoder[name]` (peft's name); forward and
    generate put the active adapter's virtual tokens in front (tuners/soft_prompts.py)."""
    encoder_class: ClassVar[type[SoftPromptEncoder]]

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.prompt_encoder = nn.ModuleDict()
        self.disabled = False

    def inject(self, adapter_name, config, *, tokenizer=None, for_loading=False):
        soft_prompts.prepare_config(config, self.model, self.encoder_class)
        embeddings = self.model.get_input_embeddings()
        self.prompt_encoder[adapter_name] = self.encoder_class(config, embeddings, tokenizer, table_only=for_loading)

    def remove(self, adapter_name):
        if adapter_name in self.prompt_encoder:
            del self.prompt_encoder[adapter_name]

    def adapter_parameters(self, adapter_name):
        return list(self.prompt_encoder[adapter_name].parameters())

    def adapter_state_dict(self, adapter_name):
        return {PROMPT_KEY: self.prompt_encoder[adapter_name].embeddings_to_save()}

    @classmethod
    def check_loadable(cls, config, is_trainable):
        if is_trainable and config.saves_encoder_output:
            raise ValueError(
                f"This {config.peft_type} folder holds the virtual tokens its encoder produced, not the encoder "
                "(the MLP/LSTM is not saved, in peft's format too), so it cannot be trained further through that "
                "encoder. Load it with is_trainable=False to use it; or, to keep training the tokens directly, "
                "load it as prompt tuning (P-tuning folders only): PeftModel.from_pretrained(model, folder, "
                f"is_trainable=True, config=PromptTuningConfig(num_virtual_tokens={config.num_virtual_tokens})).")

    def set_disabled(self, disabled):
        self.disabled = disabled

    def _prompted(self, adapter_names) -> bool:
        """Does this call get the virtual tokens (an active adapter, not disabled)?"""
        if adapter_names is not None:
            raise ValueError("adapter_names (one adapter per example) is implemented for layer methods only; "
                             "with soft prompts, run one batch per adapter (set_adapter between them).")
        return self.active_adapter is not None and not self.disabled

    def forward(self, *args, adapter_names=None, **kwargs):
        if self._prompted(adapter_names):
            return soft_prompts.forward(self, *args, **kwargs)
        return self.model(*args, **kwargs)

    def generate(self, *args, adapter_names=None, **kwargs):
        if self._prompted(adapter_names):
            return soft_prompts.generate(self, *args, **kwargs)
        return self.model.generate(*args, **kwargs)

    def merge_adapter(self, adapter_names, exact_unmerge=False):
        raise ValueError("Soft prompts cannot be merged: they are extra inputs (virtual tokens), not a change "
                         "of weights. Keep the PeftModel for inference, or unload() to get the base model back.")

    def unload(self, merged):
        self.prompt_encoder = nn.ModuleDict()
        return self.clear()
