"""Hugging Face PEFT adapter folders: `adapter_config.json` + `adapter_model.safetensors`.

The weights' names are the adapter's tensors as named inside a PeftModel, with the adapter's
name taken out (so an adapter can be loaded under any name):

    in memory: base_model.model.transformer.h.0.attn.c_attn.lora_A.default.weight
    on disk:   base_model.model.transformer.h.0.attn.c_attn.lora_A.weight

"base_model.model." is there because peft nests the user's model twice
(PeftModel.base_model.model); peftlab keeps the same nesting. Two conventions of peft's:
a tensor stored directly in a per-adapter dict ends with the dict's name
(`lora_embedding_A`, DoRA's `lora_magnitude_vector`), and a `modules_to_save` copy is saved
under the module's own name (`classifier.modules_to_save.default.weight` -> `classifier.weight`).
A soft-prompt adapter (prompt tuning, P-tuning, prefix tuning) is one tensor, the virtual tokens
as its encoder outputs them, under the key `prompt_embeddings` (see tuners/prompt_base.py).

Only JSON and safetensors are read or written, never pickle: `torch.load` of an untrusted
`adapter_model.bin` can run arbitrary code. Loading checks every key and shape before it
copies anything, so a failed load leaves the model as it was.
"""
import copy
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import PeftConfig
from .tuners.base import AdapterLayer, ModulesToSaveWrapper, bias_parameters

WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_WEIGHTS_NAME = "adapter_model.bin"
PREFIX = "base_model.model."
PROMPT_KEY = "prompt_embeddings"


def get_peft_model_state_dict(peft_model, adapter_name: str = "default") -> dict[str, torch.Tensor]:
    """{key on disk: live tensor} of one adapter of a PeftModel (what save_pretrained writes)."""
    model, config = peft_model.get_base_model(), peft_model.peft_config[adapter_name]
    if config.is_prompt_learning:
        return {PROMPT_KEY: peft_model.prompt_encoder[adapter_name].embeddings_to_save()}
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, (AdapterLayer, ModulesToSaveWrapper)) and adapter_name in module:
            out.update({f"{PREFIX}{name}.{k}": v for k, v in module.adapter_state_dict(adapter_name).items()})
    out.update({PREFIX + n: p for n, p in bias_parameters(model, config, adapter_name).items()})
    return out


def save_adapter(peft_model, adapter_name: str, directory) -> None:
    """Write one adapter of a PeftModel as a PEFT folder."""
    config = copy.copy(peft_model.peft_config[adapter_name])
    config.inference_mode = True   # as peft: a saved adapter loads frozen unless asked otherwise
    if config.base_model_name_or_path is None:   # informative; "" for a model built from a config
        config.base_model_name_or_path = getattr(peft_model.get_base_model(), "name_or_path", None) or None
    config.save_pretrained(directory)
    # safetensors wants contiguous CPU tensors that share no memory.
    tensors = {k: v.detach().to("cpu").contiguous().clone()
               for k, v in get_peft_model_state_dict(peft_model, adapter_name).items()}
    save_file(tensors, str(Path(directory) / WEIGHTS_NAME), metadata={"format": "pt"})


def read_adapter(directory, is_trainable: bool = False, config: PeftConfig | None = None):
    """(config, tensors) of a PEFT folder, both read and checked before any model is touched."""
    config = copy.copy(config or PeftConfig.from_pretrained(directory))
    if is_trainable and config.is_prompt_learning and config.saves_encoder_output:
        raise ValueError(
            f"This {config.peft_type} folder holds the virtual tokens its encoder produced, not the encoder "
            "(the MLP/LSTM is not saved, in peft's format too), so it cannot be trained further through that "
            "encoder. Load it with is_trainable=False to use it; or, to keep training the tokens directly, "
            f"load it as prompt tuning (P-tuning folders only): PeftModel.from_pretrained(model, folder, "
            f"is_trainable=True, config=PromptTuningConfig(num_virtual_tokens={config.num_virtual_tokens})).")
    if is_trainable and getattr(config, "prompt_tuning_init", None) == "TEXT":
        # The saved tokens replace any init; a TEXT init would only need the tokenizer again.
        config.prompt_tuning_init = "RANDOM"
    tensors = read_weights(directory)
    config.inference_mode = not is_trainable
    return config, tensors


def read_weights(directory) -> dict[str, torch.Tensor]:
    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        if (Path(directory) / PICKLE_WEIGHTS_NAME).is_file():
            raise ValueError(
                f"{Path(directory)} holds {PICKLE_WEIGHTS_NAME}, a pickle file. peftlab reads only "
                f"{WEIGHTS_NAME}, because unpickling a file can run arbitrary code. If you trust "
                "the file, convert it once with peft: PeftModel.from_pretrained(base, folder)"
                ".save_pretrained(new_folder) writes safetensors.")
        raise FileNotFoundError(f"No {WEIGHTS_NAME} in {Path(directory)}; save an adapter there with "
                                "`model.save_pretrained(folder)`.")
    try:
        return load_file(str(path))
    except Exception as err:   # safetensors raises its own error types for broken files
        raise ValueError(f"Could not read {path}: {err}. The file is corrupted or truncated (an "
                         "interrupted save or copy?); save or download the adapter again.") from None


def _listing(keys, n=5) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" (and {len(keys) - n} more)" if len(keys) > n else "")


@torch.no_grad()
def load_into(expected: dict[str, torch.Tensor], base: dict[str, torch.Tensor],
              tensors: dict[str, torch.Tensor], source="the adapter folder") -> None:
    """Copy `tensors` into the live `expected` adapter tensors, all or nothing.

    `base` are the base model's own parameters under disk names: peft saves some of them
    with an adapter (whole embedding matrices when embeddings are targeted), and loads them.
    """
    problems = []
    missing = expected.keys() - tensors.keys()
    unexpected = tensors.keys() - expected.keys() - base.keys()
    if missing:
        problems.append(f"missing weights: {_listing(missing)}. The folder was saved with another "
                        "config (target_modules, use_dora, bias...) or for another model.")
    if unexpected:
        problems.append(f"unexpected weights: {_listing(unexpected)}. They belong to modules this "
                        "model does not have: was the adapter trained on another architecture?")
    wrong = [f"{k}: {tuple(t.shape)} in the file, {tuple(expected.get(k, base.get(k)).shape)} here"
             for k, t in tensors.items() if k in expected.keys() | base.keys()
             and t.shape != expected.get(k, base.get(k)).shape]
    if wrong:
        problems.append(f"shape mismatches: {'; '.join(wrong[:5])}. The adapter was trained on a base "
                        "model of other sizes (hidden size, vocabulary) or the config's r differs.")
    if problems:
        raise ValueError(f"Cannot load {source}; nothing was changed. " + " ".join(problems))
    for k, t in tensors.items():
        target = expected.get(k, base.get(k))
        target.copy_(t.to(target.dtype))


def load_adapter_weights(peft_model, adapter_name: str, tensors: dict[str, torch.Tensor], source) -> None:
    """Fill the (already created) adapter `adapter_name` of a PeftModel from `tensors`."""
    # peft saves base weights with some adapters (whole embeddings); never with soft prompts.
    soft = peft_model.peft_config[adapter_name].is_prompt_learning
    base = {} if soft else {PREFIX + n: p for n, p in peft_model.get_base_model().named_parameters()}
    load_into(get_peft_model_state_dict(peft_model, adapter_name), base, tensors, f"the adapter in {source}")
