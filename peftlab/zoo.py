"""The bundled base model(s): where they live, how to load them, what they are.

They are ordinary `transformers` checkpoints, so
`AutoModelForCausalLM.from_pretrained(folder)` loads them exactly as it would a hub model;
`load_base_model()` only adds the path and puts the model in eval mode.
`python -m peftlab.pretrain` reproduces them from the bundled corpus.
"""
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

from .data import DATA_DIR

MODELS_DIR = DATA_DIR / "models"
BASE_MODEL = "pico-llama-1m"

# Architectures of the bundled models: Llama-style (RMSNorm, rotary positions, SwiGLU MLP,
# grouped-query attention), with input and output embeddings tied to save parameters.
ARCHITECTURES = {
    "pico-llama-1m": dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                          num_attention_heads=4, num_key_value_heads=2),
    # Four times larger, same depth, same tokenizer and corpus: the second point of the scale
    # studies (notebook 08). Stored in bfloat16 to keep data/ small; it loads as float32.
    "pico-llama-4m": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                          num_attention_heads=4, num_key_value_heads=2),
}


def model_config(name: str, vocab_size: int, tokenizer) -> LlamaConfig:
    if name not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {name!r}. Known: {', '.join(ARCHITECTURES)}.")
    return LlamaConfig(vocab_size=vocab_size, max_position_embeddings=256, tie_word_embeddings=True,
                       rope_theta=10_000.0, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                       **ARCHITECTURES[name])


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
    return model.eval(), tokenizer
