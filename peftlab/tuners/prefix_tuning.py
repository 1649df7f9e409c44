"""Prefix tuning (Li & Liang 2021, "Prefix-Tuning: Optimizing Continuous Prompts for
Generation", arXiv:2101.00190), and P-tuning v2 as one of its configurations.

Prompt tuning only controls the *input* of the first layer. Prefix tuning goes deeper: in
every attention layer, each head attends to P extra key/value pairs that are trained
parameters, placed before the keys and values of the real tokens:

    layer l:  K = [K_prefix(l); W_k h],  V = [V_prefix(l); W_v h]     K_prefix(l): (heads, P, head_dim)

A prefix is thus 2 * num_layers * P vectors; nothing in the model is changed. They enter
through the model's key/value cache (a transformers `DynamicCache`): the cache is exactly
"keys and values of earlier positions", so a cache holding the prefix makes the model treat
the prefix as P tokens that came before the input (see `prefix_cache`). On a model with
grouped-query attention the cache holds num_key_value_heads heads, not num_attention_heads,
so a prefix has that many heads (token_dim = num_key_value_heads * head_dim, as peft
computes it). On rotary models (Llama) the cache holds keys *after* rotation, so prefix
keys carry no position of their own.

Reparameterisation (`prefix_projection=True`): Li & Liang found training the prefix directly
unstable, and produce it with an MLP from a smaller table:

    prefix = Linear(H -> num_layers * 2 * token_dim)(tanh(Linear(token_dim -> H)(E)))      E: (P, token_dim)

H = encoder_hidden_size (default: token_dim). After training only the MLP's *output* matters
and is saved (peft's format), so a loaded prefix is a plain table.

P-tuning v2 (Liu, Ji, Fu, Tam, Du, Yang & Tang 2021, arXiv:2110.07602), "deep prompt
tuning", is the same thing without the MLP: `PrefixTuningConfig(prefix_projection=False)`,
the default here and in peft. Its authors found that per-layer prompts close the gap with
full fine-tuning on small models and hard tasks, and that the reparameterisation helps on
some tasks only.

Init: the table (and the MLP's input table) N(0, 1), the layers PyTorch's default, as in peft;
init_weights="zero" starts the prefix (or the MLP's last layer) at zero. A zero prefix is not
a no-op: its keys score 0, so it still takes a share of every attention, with zero values.
"""
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from transformers import DynamicCache

from .prompt_learning import PromptLearningConfig, PromptLearningTuner, SoftPromptEncoder
from .registry import register_method


@dataclass
class PrefixTuningConfig(PromptLearningConfig):
    """Prefix tuning / P-tuning v2, as `peft.PrefixTuningConfig` (see the module docstring)."""
    peft_type: ClassVar[str] = "PREFIX_TUNING"

    encoder_hidden_size: int | None = None
    prefix_projection: bool = False
    init_weights: str | None = None      # None: random; "zero": the prefix starts at zero

    def __post_init__(self):
        super().__post_init__()
        if self.init_weights not in (None, "zero"):
            raise ValueError(f"init_weights must be None or 'zero', got {self.init_weights!r}.")

    @property
    def saves_encoder_output(self) -> bool:
        return self.prefix_projection


class PrefixEncoder(SoftPromptEncoder):
    """Makes the flat prefix: one row per virtual token, num_layers * 2 * token_dim wide."""
    into_cache = True

    @staticmethod
    def geometry(config, model):
        """A prefix has the shape of the cache: key/value heads (fewer than the query heads with
        grouped-query attention), head_dim wide, one key and one value per layer."""
        text = model.config.get_text_config()
        heads = text.num_attention_heads
        kv_heads = getattr(text, "num_key_value_heads", None) or heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
        return {"num_layers": text.num_hidden_layers, "num_attention_heads": kv_heads, "token_dim": kv_heads * head_dim}

    @staticmethod
    def output_width(config) -> int:
        return config.num_layers * 2 * config.token_dim

    def build(self, config, word_embeddings, tokenizer):
        self.prefix_projection = config.prefix_projection
        n, d, width = config.num_virtual_tokens, config.token_dim, self.output_width(config)
        if self.prefix_projection:
            self.embedding = nn.Embedding(n, d, **self.factory)                       # E: (P, d)
            self.transform = nn.Sequential(nn.Linear(d, config.encoder_hidden_size, **self.factory), nn.Tanh(),
                                           nn.Linear(config.encoder_hidden_size, width, **self.factory))
            last = self.transform[-1]
            zeroed = [last.weight, last.bias]
        else:
            self.embedding = nn.Embedding(n, width, **self.factory)                   # the prefix itself
            zeroed = [self.embedding.weight]
        if config.init_weights == "zero":
            for t in zeroed:
                nn.init.zeros_(t)

    def encode(self):
        if self.prefix_projection:
            return self.transform(self.embedding.weight)                  # (P, L * 2 * d)
        return self.embedding.weight

    @staticmethod
    def as_cache(prefix, config, model_config, batch_size):
        return prefix_cache(prefix, config, model_config, batch_size)


def prefix_cache(prefix: torch.Tensor, config, model_config, batch_size: int) -> DynamicCache:
    """A key/value cache holding the prefix, as if P tokens had already been run.

    prefix: (P, L * 2 * token_dim). peft's layout, which saved folders follow: each row is
    L * 2 blocks of token_dim = heads * head_dim numbers: layer 0's key, layer 0's value,
    layer 1's key, ...
    """
    P, L, heads = config.num_virtual_tokens, config.num_layers, config.num_attention_heads
    head_dim = config.token_dim // heads
    kv = prefix.view(P, 2 * L, heads, head_dim).permute(1, 2, 0, 3)        # (2L, heads, P, head_dim)
    kv = kv.unsqueeze(1).expand(-1, batch_size, -1, -1, -1)                # (2L, B, heads, P, head_dim)
    # The same prefix for every example: expand is a view, and its gradient sums over the batch.
    return DynamicCache([(kv[2 * layer], kv[2 * layer + 1]) for layer in range(L)], config=model_config)


@register_method
class PrefixTuningModel(PromptLearningTuner):
    config_class = PrefixTuningConfig
    encoder_class = PrefixEncoder
