"""How a model runs soft prompts: virtual tokens in forward and generate.

The methods (peftlab/tuners/prompt_tuning.py, p_tuning.py, prefix_tuning.py) make P virtual
tokens; this module puts them in front of every example of a decoder-only causal LM, for the
soft-prompt tuner (prompt_learning.PromptLearningTuner) it receives:

- prompt tuning and P-tuning: as P extra input embeddings, inputs_embeds = [prompt; embed(x)];
- prefix tuning: as P extra keys and values in every layer, through the key/value cache.

Either way the model sees P positions before the real tokens, so four things change:
1. the attention mask gets P ones in front (the virtual tokens are always visible);
2. positions: the real tokens count from P, as if the virtual tokens were P earlier words;
3. labels (prompt tuning): -100 in front, so virtual positions never enter the loss, which
   has exactly the targets it would have without the prompt (prefix tuning adds no output
   positions, so its labels are unchanged);
4. the output of prompt tuning has P more positions: logits[:, P:] line up with input_ids (as in peft).

Left padding. With left padding a row reads [virtual][pad pad][real tokens]. peft lets the
model number positions by index, so the real tokens of a padded row start at P + (number of
pads) instead of P, and on rotary (Llama) or absolute-position (GPT-2) models a padded example
gets other logits than the same example alone. peftlab numbers positions by counting only
attended tokens (cumsum of the attention mask, as `generate` does), so the real tokens always
start at P: a left-padded batch gives the logits of each example run alone. Right padding
needs nothing special. (OPT already numbers positions this way.)

Generation reuses the model's own `generate` and KV cache: the virtual tokens are turned into
a cache first (prefix tuning: the prefix *is* a cache; prompt tuning: run the P soft
embeddings through the frozen model once, and keep their keys and values, which is the same
computation as prepending them), then `generate` continues from that cache with the real
input_ids and a mask that is P longer. Greedy, sampling, batches, beams all come for free.
"""
import inspect

import torch
from torch import nn
from transformers import DynamicCache

# The label that transformers' losses skip (CrossEntropyLoss's ignore_index): virtual tokens get it.
IGNORE_INDEX = -100


# --- checking the model and completing the config ---------------------------------------------
def _cache_keyword(model: nn.Module) -> str | None:
    """The name under which the model's forward takes a key/value cache (transformers 5 renamed
    past_key_values to cache), or None if it takes none."""
    params = inspect.signature(model.forward).parameters
    return next((k for k in ("cache", "past_key_values") if k in params), None)


def check_model(model: nn.Module, peft_type: str) -> None:
    """Refuse, with the reason and a way out, models that cannot take soft prompts here."""
    name = type(model).__name__
    if getattr(model, "config", None) is None or not hasattr(model, "get_input_embeddings"):
        raise TypeError(f"{peft_type} needs a transformers causal language model (with .config and input "
                        f"embeddings); {name} is not one. For a plain torch model use a layer method (LoraConfig).")
    if getattr(model.config, "is_encoder_decoder", False):
        raise ValueError(f"{name} is an encoder-decoder model; peftlab's soft prompts support decoder-only "
                         "causal LMs (GPT-2, Llama, OPT...). Use peft for encoder-decoders, or LoRA.")
    if not (hasattr(model, "can_generate") and model.can_generate()):
        raise ValueError(f"{name} is not a causal language model (it cannot generate); peftlab's soft prompts "
                         "support task_type CAUSAL_LM only. For classification use LoRA with modules_to_save.")
    if _cache_keyword(model) is None:
        raise ValueError(f"{name}'s forward takes no key/value cache, and peftlab's soft prompts need one (prefix "
                         "tuning *is* a cache; generation continues from one). Use a model with cache support "
                         "(any transformers decoder), or a layer method (LoraConfig).")


def max_positions(model: nn.Module) -> int | None:
    return getattr(model.config.get_text_config(), "max_position_embeddings", None)


def prepare_config(config, model: nn.Module, encoder_class) -> None:
    """Fill in the model's geometry (peft's fields) in `config`, a private copy, checked against it."""
    check_model(model, config.peft_type)
    if config.task_type is None:
        config.task_type = "CAUSAL_LM"                          # peft picks its model class by task_type
    if config.task_type != "CAUSAL_LM":
        raise ValueError(f"task_type={config.task_type!r}: peftlab's soft prompts support 'CAUSAL_LM' only.")
    if config.num_transformer_submodules not in (None, 1):
        raise ValueError("num_transformer_submodules=2 describes an encoder-decoder adapter; peftlab's soft "
                         "prompts are for decoder-only models (1).")
    geometry = encoder_class.geometry(config, model)
    for field, value in geometry.items():
        if getattr(config, field) is None:
            setattr(config, field, value)
        elif getattr(config, field) != value:
            raise ValueError(f"The {config.peft_type} adapter was made for a model with {field}="
                             f"{getattr(config, field)}, but this model has {field}={value}: it belongs to "
                             "another base model (or another size of it).")
    config.num_transformer_submodules = 1
    if getattr(config, "encoder_hidden_size", 0) is None:
        config.encoder_hidden_size = config.token_dim
    limit = max_positions(model)
    if limit is not None and config.num_virtual_tokens >= limit:
        raise ValueError(f"num_virtual_tokens={config.num_virtual_tokens} leaves no room for input: this model "
                         f"reads at most {limit} positions (max_position_embeddings). Use fewer virtual tokens.")


def _check_length(model, config, total: int, what: str, fix: str) -> None:
    """Refuse inputs that need more positions than the model has (GPT-2 and OPT would fail with
    an index error deep inside; rotary models would silently run outside their training range)."""
    limit = max_positions(model)
    if limit is not None and total > limit:
        P = config.num_virtual_tokens
        raise ValueError(f"{what} needs {total} positions with the {P} virtual tokens, but this model reads at "
                         f"most {limit} (max_position_embeddings). {fix.format(room=limit - P)}, or use fewer "
                         "virtual tokens.")


# --- forward -------------------------------------------------------------------------------------
def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position of each token = how many attended tokens come before it (pads do not count)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def forward(tuner, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None,
            position_ids=None, cache=None, past_key_values=None, **kwargs):
    """The base model's forward with the active adapter's virtual tokens in front (module docstring).

    A non-empty `cache` (from an earlier call with use_cache=True) already holds the virtual
    tokens: then only the mask and positions are extended, as in a hand-written decoding loop.
    `attention_mask` and `position_ids` always describe the real tokens only.
    """
    model, name = tuner.model, tuner.active_adapter
    config, encoder = tuner.peft_config[name], tuner.prompt_encoder[name]
    P, cache = config.num_virtual_tokens, cache if cache is not None else past_key_values
    x = input_ids if input_ids is not None else inputs_embeds
    if x is None:
        raise ValueError("Pass input_ids (or inputs_embeds).")
    B, n = x.shape[:2]
    past = cache.get_seq_length() if cache is not None else 0   # includes the P virtual tokens
    fresh = past == 0
    _check_length(model, config, past + n + (P if fresh else 0), f"This input of {n} tokens",
                  "Shorten it to at most {room} tokens (tokenizer(..., truncation=True, max_length={room}))")
    if attention_mask is None:
        attention_mask = torch.ones(B, max(past - P, 0) + n, dtype=torch.long, device=x.device)
    mask = torch.cat([attention_mask.new_ones(B, P), attention_mask], dim=1)      # (B, P + past real + n)
    if mask.shape[1] != past + n + (P if fresh else 0):
        raise ValueError(f"attention_mask has {attention_mask.shape[1]} columns; it should cover the "
                         f"{max(past - P, 0)} real tokens in the cache and the {n} new ones.")
    if position_ids is None:
        positions = positions_from_mask(mask)                                      # (B, P + ... + n)
    else:   # the caller numbered the real tokens from 0; they now start after the virtual tokens
        positions = torch.cat([torch.arange(P, device=x.device).expand(B, P), position_ids + P], dim=1)
    kw = {_cache_keyword(model): cache, "attention_mask": mask, "labels": labels, **kwargs}

    if not fresh:   # the cache holds the virtual tokens already: feed the real tokens only
        return model(input_ids=input_ids, inputs_embeds=inputs_embeds, position_ids=positions[:, -n:], **kw)
    if encoder.into_cache:   # prefix tuning: the virtual tokens are keys and values, a cache
        kw[_cache_keyword(model)] = encoder.as_cache(encoder().to(model.dtype), config, model.config, B)
        return model(input_ids=input_ids, inputs_embeds=inputs_embeds, position_ids=positions[:, -n:], **kw)

    # Prompt tuning / P-tuning: the virtual tokens are P extra input embeddings.
    if inputs_embeds is None:
        inputs_embeds = model.get_input_embeddings()(input_ids)                    # (B, n, d)
    prompts = encoder().to(inputs_embeds.dtype).unsqueeze(0).expand(B, -1, -1)    # (B, P, d)
    if labels is not None:
        # Labels are shifted inside the model: position t predicts label t + 1. The P virtual
        # positions get no label, and labels[:, 0] is dropped too: only the last virtual token
        # could predict it, and the base model never predicts its first token. So the loss has
        # exactly the base model's targets. (peft keeps labels[:, 0]; it is -100 anyway when
        # the prompt part is masked, as PromptTargetCollator does.)
        kw["labels"] = torch.cat([labels.new_full((B, P + 1), IGNORE_INDEX), labels[:, 1:]], dim=1)
    return model(inputs_embeds=torch.cat([prompts, inputs_embeds], dim=1), position_ids=positions, **kw)


# --- generate ------------------------------------------------------------------------------------
@torch.no_grad()
def virtual_token_cache(tuner, batch_size: int):
    """A key/value cache holding the active adapter's P virtual tokens, for `batch_size` rows."""
    model, name = tuner.model, tuner.active_adapter
    config, encoder = tuner.peft_config[name], tuner.prompt_encoder[name]
    tokens = encoder().to(model.dtype)
    if encoder.into_cache:
        return encoder.as_cache(tokens, config, model.config, batch_size)
    # Run the soft prompt alone: causal attention means its keys and values do not depend on
    # what follows, so they are exactly those of the full forward pass.
    cache = DynamicCache(config=model.config)
    P = config.num_virtual_tokens
    model(inputs_embeds=tokens.unsqueeze(0).expand(batch_size, -1, -1), use_cache=True,
          position_ids=torch.arange(P, device=tokens.device).expand(batch_size, P), **{_cache_keyword(model): cache})
    return cache


def generate(tuner, input_ids=None, attention_mask=None, **kwargs):
    """`generate` of the base model, continuing from a cache that holds the virtual tokens.
    Pass the tokenizer's attention_mask with padded batches (without one, every token counts)."""
    model = tuner.model
    config = tuner.peft_config[tuner.active_adapter]
    for key in ("inputs_embeds", "cache", "past_key_values"):
        if kwargs.get(key) is not None:
            raise ValueError(f"generate with a soft-prompt adapter takes input_ids, not {key}: the virtual tokens "
                             "are put into a fresh cache first.")
    if input_ids is None:
        raise ValueError("generate with a soft-prompt adapter needs input_ids (at least one token per row).")
    B, n = input_ids.shape
    gen = kwargs.get("generation_config") or model.generation_config

    def setting(key):   # as generate resolves it: its own argument, else the generation config
        return kwargs.get(key, getattr(gen, key, None))
    new = setting("max_new_tokens")
    total = config.num_virtual_tokens + (n + new if new is not None else setting("max_length") or n)
    _check_length(model, config, total, f"Generating from {n} tokens",
                  "Keep input tokens + max_new_tokens within {room}")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    mask = torch.cat([attention_mask.new_ones(B, config.num_virtual_tokens), attention_mask], dim=1)
    # generate repeats each row for every returned sequence / beam; the cache must have as many rows.
    copies = (setting("num_return_sequences") or 1) * (setting("num_beams") or 1)
    cache = virtual_token_cache(tuner, B * copies)
    # The mask is P longer than input_ids: generate then reads input_ids as the tokens after the
    # cache, and numbers positions from the mask (so left padding is handled as in forward).
    return model.generate(input_ids=input_ids, attention_mask=mask, **{_cache_keyword(model): cache}, **kwargs)
