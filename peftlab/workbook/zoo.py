"""The bundled base model(s): where they live, how to load them, what they are.

They are ordinary `transformers` checkpoints, so
`AutoModelForCausalLM.from_pretrained(folder)` loads them exactly as it would a hub model;
`load_base_model()` only adds the path and puts the model in eval mode. It also takes a hub model id
("gpt2"): cached, or downloaded when the hub has it, else the bundled model, with a line saying so.
`python -m peftlab.workbook.pretrain` reproduces them from the bundled corpus.
"""
import http.client
import os
import threading
import urllib.error
import urllib.request
from pathlib import Path

import huggingface_hub
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, LlamaConfig

from peftlab.workbook.data import DATA_DIR

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
    """(model, tokenizer) in eval mode. `name` is a bundled model (nothing is downloaded), a local folder,
    or a hub model id such as "gpt2": read from the local cache if it is there, downloaded if the hub
    can be reached; offline and not cached, one line says so and the bundled model is loaded instead."""
    if (MODELS_DIR / name / "config.json").exists() or name.startswith("pico-"):
        path = model_path(name)            # a bundled model; a misspelt one is an error listing them
    elif (Path(name) / "config.json").exists():
        path = Path(name)
    else:
        loaded = load_hub_model(name, dtype)
        if loaded is not None:
            return loaded
        path = model_path(BASE_MODEL)
    return _load(path, dtype, local_files_only=True)


def _load(source, dtype: torch.dtype, local_files_only: bool):
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_files_only)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, local_files_only=local_files_only)
    if tokenizer.pad_token is None:        # GPT-2 has none; the collators pad (the mask hides it)
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model, "loss_type", None) is None:
        # GPT2LMHeadModel's name does not say "ForCausalLM", so transformers would warn on the first
        # loss and then use the causal-LM loss anyway: name it.
        model.loss_type = "ForCausalLM"
    return model.eval(), tokenizer


def load_hub_model(name: str, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) of hub model `name` from the local cache, else downloaded when the hub has it;
    None (after one line saying why) when it is neither cached nor available."""
    try:
        return _load(name, dtype, local_files_only=True)      # cached: no network at all
    except OSError:
        pass
    reason = hub_unavailable(name)
    if reason is None:
        return _load(name, dtype, local_files_only=False)
    print(f"Hub model {name!r} is not in the local cache and {reason}: using the bundled {BASE_MODEL!r} instead.")
    return None


def hub_unavailable(name: str, timeout: float = 2.0) -> str | None:
    """None when the hub can serve model `name` now; else why not, in a few words: HF_HUB_OFFLINE is
    set, the hub did not answer within `timeout` seconds, or it answered with an HTTP error."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    status = http_status(f"{endpoint}/api/models/{name}", timeout)
    if status == 200:
        return None
    if status is None:
        return f"{endpoint} did not answer within {timeout:g} s (offline?)"
    return f"{endpoint} answered HTTP {status} for it (a typo, or a gated model without a token?)"


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The HTTP status of a GET of `url`, or None when no answer came within `timeout` seconds. Name
    resolution can take longer than a socket's own timeout, so the request runs in a thread that we
    stop waiting for: the caller never waits longer than `timeout`."""
    token = huggingface_hub.get_token()        # read from HF_TOKEN or the token file: no network
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    result = []

    def ask():
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                result.append(response.status)
        except urllib.error.HTTPError as error:
            result.append(error.code)
        except (OSError, ValueError, http.client.HTTPException):   # no route or name, refused, timed out, garbled
            pass

    attempt = threading.Thread(target=ask, daemon=True)
    attempt.start()
    attempt.join(timeout)
    return result[0] if result else None
