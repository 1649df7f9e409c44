"""Soft-prompt configs and padded batches shared by the soft-prompt and interop tests."""
import torch
from lora_testutils import VOCAB, build  # noqa: F401  (re-exported for the tests)
from transformers import LlamaConfig, LlamaForCausalLM

P = 4   # virtual tokens in every test adapter
ARCHS = ("gpt2", "llama", "opt")

# Each method with the same arguments in peftlab and peft (`lib` is either module).
METHODS = {
    "prompt": lambda lib: lib.PromptTuningConfig(num_virtual_tokens=P),
    "ptune_mlp": lambda lib: lib.PromptEncoderConfig(num_virtual_tokens=P, encoder_hidden_size=16),
    "ptune_lstm": lambda lib: lib.PromptEncoderConfig(num_virtual_tokens=P, encoder_hidden_size=16,
                                                      encoder_reparameterization_type="LSTM"),
    "prefix": lambda lib: lib.PrefixTuningConfig(num_virtual_tokens=P),
    "prefix_proj": lambda lib: lib.PrefixTuningConfig(num_virtual_tokens=P, prefix_projection=True,
                                                      encoder_hidden_size=16),
}
CASES = [(a, m) for a in ARCHS for m in METHODS]


def config(lib, method: str):
    cfg = METHODS[method](lib)
    cfg.task_type = "CAUSAL_LM"   # peft picks its causal-LM model class by task_type
    return cfg


def offset(method: str) -> int:
    """Prompt tuning / P-tuning add P output positions in front; prefix tuning adds none."""
    return 0 if method.startswith("prefix") else P


def sequences(lengths=(6, 4, 2), seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (n,), generator=g) for n in lengths]


def pad(seqs: list[torch.Tensor], side: str, pad_id: int = 0):
    """(input_ids, attention_mask) of the sequences padded on `side` ("left" or "right")."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        cols = slice(width - len(s), width) if side == "left" else slice(0, len(s))
        ids[i, cols], mask[i, cols] = s, 1
    return ids, mask


def real_logits(logits: torch.Tensor, mask: torch.Tensor, method: str) -> list[torch.Tensor]:
    """Per example, the logits at its real (not padding, not virtual) positions."""
    logits = logits[:, offset(method):]
    return [logits[i][mask[i].bool()] for i in range(len(mask))]


def gqa_llama():
    """Grouped-query attention with an explicit head_dim: 4 query heads of 4 (queries 16 wide, not
    hidden 32), 2 key/value heads, so a prefix is 2 heads x 4 = 8 wide per layer and key or value."""
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, head_dim=4,
                                        max_position_embeddings=32, bos_token_id=1, eos_token_id=2,
                                        pad_token_id=0)).eval()
