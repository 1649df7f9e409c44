"""What every soft-prompt method shares: an encoder that makes the virtual tokens.

Prompt tuning, P-tuning and prefix tuning all learn `num_virtual_tokens` vectors and change
nothing in the model. They differ in *how the vectors are produced* (a plain table, a small
network over a table) and in *where they enter* the model (as input embeddings, or as keys and
values inside every attention layer). The "where" is in peftlab/soft_prompts.py; each method's
module defines the "how" as a `SoftPromptEncoder`:

    encoder() -> (num_virtual_tokens, width)      width = token_dim, or for prefix tuning
                                                  num_layers * 2 * token_dim (a key and a value per layer)

What is saved (peft's format, key "prompt_embeddings") is this *output*, not the network
behind it. So a loaded adapter is a plain table (`table_only` when loaded for inference): it
reproduces exactly what was trained, but a network such as P-tuning's MLP cannot be trained
further from a folder (prompt tuning and prefix tuning without projection can: their table
is all they train).

`register_prompt_method(peft_type, encoder_class)` plugs a method in.
"""
import torch
from torch import nn

from .base import compute_dtype

PROMPT_METHODS: dict[str, type["SoftPromptEncoder"]] = {}


def register_prompt_method(peft_type: str, encoder_class: type) -> None:
    """Declare which encoder class makes the virtual tokens of method `peft_type`."""
    PROMPT_METHODS[peft_type] = encoder_class


class SoftPromptEncoder(nn.Module):
    """Holds `embedding`, a table with one row per virtual token (peft's name, so in-memory
    keys read `prompt_encoder.default.embedding.weight` in both libraries).

    A subclass builds its network in `build` and says how it turns the table into the
    virtual tokens in `encode`. A config with `inference_mode=True` (as in every loaded
    folder) builds the table only: it then *is* the output.
    """

    def __init__(self, config, word_embeddings: nn.Embedding, tokenizer=None):
        super().__init__()
        self.table_only = bool(config.inference_mode)
        weight = word_embeddings.weight
        # fp32 for fp16/bf16 bases, so small optimizer updates are not rounded away (base.compute_dtype).
        self.factory = {"dtype": compute_dtype(weight), "device": weight.device}
        if self.table_only:
            self.embedding = nn.Embedding(config.num_virtual_tokens, self.output_width(config), **self.factory)
        else:
            self.build(config, word_embeddings, tokenizer)

    # --- what a method implements ---------------------------------------------------------
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
