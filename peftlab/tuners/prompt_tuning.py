"""Prompt tuning (Lester, Al-Rfou & Constant 2021, "The Power of Scale for Parameter-Efficient
Prompt Tuning", arXiv:2104.08691).

Freeze the whole model and learn only P vectors, the "soft prompt", placed in front of the
embedded input:

    inputs_embeds = [p_1, ..., p_P, embed(x_1), ..., embed(x_n)]        p_i: (token_dim,)

The model reads them like the embeddings of P extra words, but they need not be the
embedding of any word: gradient descent moves them anywhere in embedding space. That is
P * token_dim trained numbers (8 x 128 = 1,024 for the bundled model).

Initialisation (`prompt_tuning_init`, peft's names), which the paper found to matter:
- TEXT: the embeddings of `prompt_tuning_init_text`'s tokens ("Classify the sentiment:"),
  repeated or cut to P tokens; tokenized as peft does (with the tokenizer's special tokens,
  e.g. <bos>). Needs a tokenizer: `get_peft_model(model, config, tokenizer=tok)`, or
  `tokenizer_name_or_path` naming a *local* folder (peftlab never downloads).
- SAMPLE_VOCAB: the embeddings of P tokens drawn uniformly from the vocabulary.
- RANDOM: independent normal entries. peft draws them from N(0, 1); a small model's embeddings
  have a much smaller spread (about 1/50 of that for the bundled model), so such a prompt
  starts far from anything the model has seen and drowns the real tokens. peftlab draws from
  N(0, s^2) with s the standard deviation of the model's embedding matrix: the same *kind*
  of init at the model's own scale. The saved format is unaffected (peft loads it as is). For
  peft's exact init: `nn.init.normal_(peft_model.prompt_encoder["default"].embedding.weight)`.
"""
import math
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from .prompt_learning import PromptLearningConfig, PromptLearningTuner, SoftPromptEncoder
from .registry import register_method

__all__ = ["PromptTuningConfig", "PromptTuningInit"]


class PromptTuningInit(str, Enum):
    """peft's init names; a str Enum, so PromptTuningInit.TEXT == "TEXT"."""
    TEXT = "TEXT"
    SAMPLE_VOCAB = "SAMPLE_VOCAB"
    RANDOM = "RANDOM"


@dataclass
class PromptTuningConfig(PromptLearningConfig):
    """Prompt tuning, as `peft.PromptTuningConfig` (see the module docstring).

    num_virtual_tokens: P, the soft prompt's length.   prompt_tuning_init: TEXT, SAMPLE_VOCAB
    or RANDOM.   prompt_tuning_init_text: the text for TEXT.   tokenizer_name_or_path: a local
    tokenizer folder for TEXT (or pass `tokenizer=` to get_peft_model).   tokenizer_kwargs:
    extra arguments for AutoTokenizer.from_pretrained.
    """
    peft_type: ClassVar[str] = "PROMPT_TUNING"

    prompt_tuning_init: str = PromptTuningInit.RANDOM.value
    prompt_tuning_init_text: str | None = None
    tokenizer_name_or_path: str | None = None
    tokenizer_kwargs: dict | None = None

    def __post_init__(self):
        super().__post_init__()
        init = self.prompt_tuning_init
        self.prompt_tuning_init = init.value if isinstance(init, Enum) else init
        if self.prompt_tuning_init not in PromptTuningInit.__members__:
            raise ValueError(f"prompt_tuning_init must be one of {', '.join(PromptTuningInit.__members__)}, "
                             f"got {init!r}.")
        if self.prompt_tuning_init == "TEXT" and not self.prompt_tuning_init_text:
            raise ValueError("prompt_tuning_init='TEXT' needs the text: set prompt_tuning_init_text, "
                             "e.g. 'Classify the sentiment of this review:'.")


def load_tokenizer(config: PromptTuningConfig, tokenizer=None):
    """The tokenizer for a TEXT init: the one given, or one read from a local folder."""
    if tokenizer is not None:
        return tokenizer
    path = config.tokenizer_name_or_path
    if path is None:
        raise ValueError("prompt_tuning_init='TEXT' needs a tokenizer to turn the text into tokens: "
                         "pass it, get_peft_model(model, config, tokenizer=tokenizer), or set "
                         "tokenizer_name_or_path to a local tokenizer folder.")
    if not Path(path).is_dir():
        raise ValueError(f"tokenizer_name_or_path={path!r} is not a local folder, and peftlab never "
                         "downloads. Pass the tokenizer object instead: get_peft_model(model, config, "
                         "tokenizer=AutoTokenizer.from_pretrained(...)).")
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(path, local_files_only=True, **(config.tokenizer_kwargs or {}))


def text_token_ids(tokenizer, text: str, n: int) -> list[int]:
    """The text's token ids, repeated until there are n, then cut to n (peft's rule)."""
    ids = tokenizer(text)["input_ids"]
    if not ids:
        raise ValueError(f"prompt_tuning_init_text={text!r} gives no tokens; use a non-empty text.")
    return (ids * math.ceil(n / len(ids)))[:n]


class PromptEmbedding(SoftPromptEncoder):
    """The soft prompt itself: a (P, token_dim) table, trained directly."""

    def build(self, config, word_embeddings, tokenizer):
        n, table = config.num_virtual_tokens, word_embeddings.weight.detach()   # table: (vocab, dim)
        self.embedding = nn.Embedding(n, config.token_dim, **self.factory)
        with torch.no_grad():
            if config.prompt_tuning_init == "TEXT":
                tokenizer = load_tokenizer(config, tokenizer)
                if config.tokenizer_name_or_path is None:   # peft refuses a TEXT config without it
                    config.tokenizer_name_or_path = getattr(tokenizer, "name_or_path", None) or None
                ids = torch.tensor(text_token_ids(tokenizer, config.prompt_tuning_init_text, n))
                if int(ids.max()) >= table.shape[0]:
                    raise ValueError(f"The tokenizer gives token id {int(ids.max())}, but the model has only "
                                     f"{table.shape[0]} embeddings: is it the tokenizer of this model?")
                self.embedding.weight.copy_(table[ids.to(table.device)])
            elif config.prompt_tuning_init == "SAMPLE_VOCAB":
                ids = torch.randint(0, table.shape[0], (n,), device=table.device)
                self.embedding.weight.copy_(table[ids])
            else:   # RANDOM, at the scale of the model's own embeddings (see the module docstring)
                nn.init.normal_(self.embedding.weight, mean=0.0, std=float(table.float().std()))

    def encode(self):
        return self.embedding.weight                                      # (P, token_dim)


@register_method
class PromptTuningModel(PromptLearningTuner):
    config_class = PromptTuningConfig
    encoder_class = PromptEmbedding
