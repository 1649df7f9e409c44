"""P-tuning (Liu, Zheng, Du, Ding, Qian, Yang & Tang 2021, "GPT Understands, Too",
arXiv:2103.10385).

Like prompt tuning, P-tuning puts P trained vectors in front of the embedded input. The
difference is how they are parameterised: not trained directly, but produced by a small
*prompt encoder* from a table of P input vectors h_1..h_P:

    MLP:   p_i = MLP(h_i)                               Linear-ReLU-Linear-ReLU-Linear
    LSTM:  p_i = MLP(BiLSTM(h_1..h_P)_i)                each p_i sees the whole prompt

Why a network, if its output is still just P vectors? The paper argues that soft prompt
vectors trained independently fall into poor local minima, and that tying them through a
shared network (the LSTM also makes them depend on each other, like the words of a
sentence) optimizes better. The network is only a training aid: once trained, the P output
vectors are all that matter, and they are what is saved (peft's format: "prompt_embeddings",
shape (P, token_dim)). A loaded P-tuning adapter is therefore a plain table: it gives the
same outputs, but cannot be trained further *through the encoder* (which is not in the file).

Sizes (peft's layout, so in-memory names match): embedding (P, token_dim);
MLP: token_dim -> H -> H -> token_dim;  LSTM: bidirectional, `encoder_num_layers` layers of
hidden size H, then an MLP 2H -> 2H -> token_dim. H = encoder_hidden_size (default:
token_dim). peft's MLP always has these 3 layers and ignores `encoder_num_layers`; so does
peftlab (with the same warning).
"""
import warnings
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from torch import nn

from .prompt_learning import PromptLearningConfig, PromptLearningTuner, SoftPromptEncoder
from .registry import register_method

__all__ = ["PromptEncoderConfig", "PromptEncoderReparameterizationType"]


class PromptEncoderReparameterizationType(str, Enum):
    MLP = "MLP"
    LSTM = "LSTM"


@dataclass
class PromptEncoderConfig(PromptLearningConfig):
    """P-tuning, as `peft.PromptEncoderConfig`: the encoder type ("MLP" or "LSTM"), its hidden
    size (None: token_dim), its number of LSTM layers, and its dropout (LSTM only, between layers)."""
    peft_type: ClassVar[str] = "P_TUNING"

    encoder_reparameterization_type: str = PromptEncoderReparameterizationType.MLP.value
    encoder_hidden_size: int | None = None
    encoder_num_layers: int = 2
    encoder_dropout: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        kind = self.encoder_reparameterization_type
        self.encoder_reparameterization_type = kind.value if isinstance(kind, Enum) else kind
        if self.encoder_reparameterization_type not in PromptEncoderReparameterizationType.__members__:
            raise ValueError(f"encoder_reparameterization_type must be 'MLP' or 'LSTM', got {kind!r}.")
        if not 0.0 <= self.encoder_dropout < 1.0:
            raise ValueError(f"encoder_dropout must be in [0, 1), got {self.encoder_dropout!r}.")

    @property
    def saves_encoder_output(self) -> bool:
        return True


class PromptEncoder(SoftPromptEncoder):
    """A table of P input vectors and the network (MLP or BiLSTM + MLP) that maps them to the
    virtual tokens. The input table starts as N(0, 1) and the layers with PyTorch's default
    init, as in peft; the output scale is set by the network."""

    def build(self, config, word_embeddings, tokenizer):
        d, hidden = config.token_dim, config.encoder_hidden_size
        self.encoder_type = config.encoder_reparameterization_type
        self.embedding = nn.Embedding(config.num_virtual_tokens, d, **self.factory)       # h: (P, d)
        if self.encoder_type == "LSTM":
            self.lstm_head = nn.LSTM(d, hidden, num_layers=config.encoder_num_layers, dropout=config.encoder_dropout,
                                     bidirectional=True, batch_first=True, **self.factory)
            self.mlp_head = nn.Sequential(nn.Linear(2 * hidden, 2 * hidden, **self.factory), nn.ReLU(),
                                          nn.Linear(2 * hidden, d, **self.factory))
        else:
            if config.encoder_num_layers != 2:
                warnings.warn("for MLP, the argument `encoder_num_layers` is ignored. Exactly 2 MLP layers "
                              "are used (as in peft: 3 Linear layers with 2 ReLUs).", stacklevel=2)
            self.mlp_head = nn.Sequential(nn.Linear(d, hidden, **self.factory), nn.ReLU(),
                                          nn.Linear(hidden, hidden, **self.factory), nn.ReLU(),
                                          nn.Linear(hidden, d, **self.factory))

    def encode(self):
        h = self.embedding.weight                                         # (P, d)
        if self.encoder_type == "LSTM":
            h = self.lstm_head(h.unsqueeze(0))[0].squeeze(0)              # (P, 2 * hidden): both directions
        return self.mlp_head(h)                                           # (P, d)


@register_method
class PromptEncoderModel(PromptLearningTuner):
    config_class = PromptEncoderConfig
    encoder_class = PromptEncoder
