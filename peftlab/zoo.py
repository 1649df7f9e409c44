"""The bundled base model(s): where they live, how to load them, what they are.

They are ordinary `transformers` checkpoints, so
`AutoModelForCausalLM.from_pretrained(folder)` loads them exactly as it would a hub model;
`load_base_model()` only adds the path and puts the model in eval mode.
`python -m peftlab.pretrain` reproduces them from the bundled corpus.
"""
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, LlamaConfig

from .data import DATA_DIR

MODELS_DIR = DATA_DIR / "models"
BASE_MODEL = "pico-llama-1m"

# Architectures of the bundled models, as (family, sizes). Input and output embeddings are tied
# to save parameters. Llama-style: RMSNorm, rotary positions, SwiGLU MLP, grouped-query attention,
# and no bias anywhere. GPT-2-style: LayerNorm, learned positions, GELU MLP, and a bias in every
# linear and norm layer.
ARCHITECTURES = {
    "pico-llama-1m": ("llama", dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                                    num_attention_heads=4, num_key_value_heads=2)),
    # Four times larger, same depth, same tokenizer and corpus: the second point of the scale
    # studies (notebook 08). Stored in bfloat16 to keep data/ small; it loads as float32.
    "pico-llama-4m": ("llama", dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                                    num_attention_heads=4, num_key_value_heads=2)),
    # The 1M model's width, depth, corpus, tokenizer and token budget in GPT-2's layout: the model
    # with bias terms that BitFit needs (notebook 07), since Llama-style models have none.
    "pico-gpt2-1m": ("gpt2", dict(n_embd=128, n_inner=512, n_layer=4, n_head=4)),
}


def model_config(name: str, vocab_size: int, tokenizer) -> LlamaConfig | GPT2Config:
    if name not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {name!r}. Known: {', '.join(ARCHITECTURES)}.")
    family, sizes = ARCHITECTURES[name]
    common = dict(vocab_size=vocab_size, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    if family == "gpt2":
        return GPT2Config(n_positions=256, **common, **sizes)
    return LlamaConfig(max_position_embeddings=256, rope_theta=10_000.0, **common, **sizes)


def model_path(name: str = BASE_MODEL) -> Path:
    path = MODELS_DIR / name
    if not (path / "config.json").exists():
        available = sorted(p.name for p in MODELS_DIR.glob("*") if (p / "config.json").exists())
        raise FileNotFoundError(f"No bundled model {name!r} in {MODELS_DIR}. "
                                f"Available: {', '.join(available) or 'none'}.")
    return path


def load_base_model(name: str = BASE_MODEL, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) of a bundled model, in eval mode. Nothing is downloaded."""
    path = model_path(name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    if getattr(model, "loss_type", None) is None:
        # GPT2LMHeadModel's name does not say "ForCausalLM", so transformers would warn on the first
        # loss and then use the causal-LM loss anyway: name it.
        model.loss_type = "ForCausalLM"
    return model.eval(), tokenizer
