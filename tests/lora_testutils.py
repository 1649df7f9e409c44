"""Tiny models built from configs (seeded, eval mode) shared by the LoRA and interop tests."""
import pytest
import torch
import transformers
from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    ViTConfig,
    ViTForImageClassification,
)

transformers.logging.set_verbosity_error()
VOCAB = 100


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Import this into a test module: its tiny matmuls run ~50x faster on one thread than on
    two threads competing for busy cores. The thread count is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class CNN(nn.Module):
    """A small conv net on 1 x 8 x 8 images: Conv2d (padded, then strided), a Conv1d over the flattened
    feature map, a linear head. (Dilated convolutions: test_lora_conv.py; peft 0.21 cannot run them.)"""
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(16, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 16, 4)

    def forward(self, x):
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))        # (N, 16, 4, 4)
        return self.fc(torch.relu(self.conv3(h.flatten(2))).flatten(1))


def gpt2():
    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=32,
                                      bos_token_id=1, eos_token_id=2))


def llama():
    return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                        max_position_embeddings=32, bos_token_id=1, eos_token_id=2,
                                        pad_token_id=0))


def neox():
    """GPT-NeoX (Pythia's layout): q, k and v fused in one query_key_value layer, with biases."""
    return GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                            num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=32,
                                            bos_token_id=1, eos_token_id=2, pad_token_id=0))


def opt():
    return OPTForCausalLM(OPTConfig(vocab_size=VOCAB, hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                                    num_attention_heads=2, max_position_embeddings=32,
                                    word_embed_proj_dim=32, pad_token_id=0, bos_token_id=1, eos_token_id=2))


def bert_cls(hidden=32):
    return BertForSequenceClassification(BertConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=2,
                                                    num_attention_heads=2, intermediate_size=64, num_labels=3,
                                                    max_position_embeddings=32))


def vit():
    """A vision transformer on 1 x 8 x 8 images: 2 x 2 patches (a Conv2d), 2 layers, 3 classes."""
    return ViTForImageClassification(ViTConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=32,
                                               num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                               num_labels=3))


BUILDERS = {"gpt2": gpt2, "llama": llama, "neox": neox, "opt": opt, "bert": bert_cls, "mlp": MLP, "cnn": CNN,
            "vit": vit}
PLAIN = ("mlp", "cnn")            # plain torch modules: called with x, return a tensor
CLASSIFIERS = ("bert", "vit")     # return logits over 3 labels


def build(arch: str, seed: int = 0, **kwargs) -> nn.Module:
    """The same weights for the same (arch, seed): two calls give two identical base models."""
    torch.manual_seed(seed)
    return BUILDERS[arch](**kwargs).eval()


def inputs(arch: str, batch: int = 3, seq: int = 7, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    if arch == "mlp":
        return {"x": torch.randn(batch, 8, generator=g)}
    if arch == "cnn":
        return {"x": torch.randn(batch, 1, 8, 8, generator=g)}
    if arch == "vit":
        return {"pixel_values": torch.randn(batch, 1, 8, 8, generator=g)}
    return {"input_ids": torch.randint(3, VOCAB, (batch, seq), generator=g)}


def output(model, arch, **kw):
    out = model(**inputs(arch, **kw))
    return out if arch in PLAIN else out.logits


@torch.no_grad()
def perturb(model, scale: float = 0.1, seed: int = 2):
    """Add noise to every trainable tensor, so adapters (and DoRA magnitudes, head copies)
    differ from their initial values and a test can tell them apart."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if p.requires_grad:
            p.add_(scale * torch.randn(p.shape, generator=g).to(p.dtype))


def base_state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
