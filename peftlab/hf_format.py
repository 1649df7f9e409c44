"""Hugging Face PEFT adapter folders: `adapter_config.json` + `adapter_model.safetensors`.

The weights' names are the adapter's tensors as named inside a PeftModel, with the adapter's
name taken out (so an adapter can be loaded under any name):

    in memory: base_model.model.transformer.h.0.attn.c_attn.lora_A.default.weight
    on disk:   base_model.model.transformer.h.0.attn.c_attn.lora_A.weight

"base_model.model." is there because peft nests the user's model twice
(PeftModel.base_model.model); peftlab keeps the same nesting. Which tensors an adapter saves,
and under which keys, is the method's business: each tuner's `adapter_state_dict` says (a
`modules_to_save` copy under the module's own name, a soft prompt as one tensor
`prompt_embeddings`...), and loading fills exactly the tensors that saving would write, so the
two can never drift apart. This module only moves them between files and the model.

Only JSON and safetensors are read or written, never pickle: `torch.load` of an untrusted
`adapter_model.bin` can run arbitrary code. Loading checks every key and shape before it
copies anything, so a failed load leaves the model as it was.
"""
import copy
import os
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from peftlab.config import CONFIG_NAME, PeftConfig
from peftlab.tuners.registry import tuner_for

WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_WEIGHTS_NAME = "adapter_model.bin"


def get_peft_model_state_dict(peft_model, adapter_name: str = "default") -> dict[str, torch.Tensor]:
    """{key on disk: live tensor} of one adapter of a PeftModel (what save_pretrained writes)."""
    peft_model.base_model.check_name(adapter_name)
    return peft_model.base_model.adapter_state_dict(adapter_name)


def set_peft_model_state_dict(peft_model, peft_model_state_dict: dict[str, torch.Tensor],
                              adapter_name: str = "default") -> None:
    """Copy an adapter's tensors, keyed as on disk, into adapter `adapter_name` (which must exist),
    all or nothing: any missing, unexpected or misshapen key and nothing is changed."""
    peft_model.base_model.check_name(adapter_name)
    tuner = peft_model.base_model
    load_into(tuner.adapter_state_dict(adapter_name), tuner.optional_tensors(adapter_name),
              peft_model_state_dict, f"the state dict for adapter {adapter_name!r}")


def save_adapter(peft_model, adapter_name: str, directory) -> None:
    """Write one adapter of a PeftModel as a PEFT folder, atomically: both files are written whole
    under temporary names in the folder first, then moved into place (weights, then config), so a
    save that fails at any point leaves the folder's previous adapter as it was, never a new
    config beside old weights (which would load, silently, with the wrong scaling)."""
    config = copy.copy(peft_model.peft_config[adapter_name])
    config.inference_mode = True   # as peft: a saved adapter loads frozen unless asked otherwise
    if config.base_model_name_or_path is None:   # informative; "" for a model built from a config
        config.base_model_name_or_path = getattr(peft_model.get_base_model(), "name_or_path", None) or None
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    staged = {folder / WEIGHTS_NAME: folder / f".{WEIGHTS_NAME}.{os.getpid()}.tmp",
              folder / CONFIG_NAME: folder / f".{CONFIG_NAME}.{os.getpid()}.tmp"}
    weights_tmp, config_tmp = staged.values()
    try:
        # safetensors wants contiguous CPU tensors that share no memory.
        tensors = {k: v.detach().to("cpu").contiguous().clone()
                   for k, v in get_peft_model_state_dict(peft_model, adapter_name).items()}
        save_file(tensors, str(weights_tmp), metadata={"format": "pt"})
        config_tmp.write_text(config.to_json())
        for tmp in (weights_tmp, config_tmp):
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())   # on disk before the names change
        for final, tmp in staged.items():
            os.replace(tmp, final)     # atomic on POSIX and Windows
    finally:
        for tmp in (weights_tmp, config_tmp):
            tmp.unlink(missing_ok=True)


def read_adapter(directory, is_trainable: bool = False, config: PeftConfig | None = None):
    """(config, tensors) of a PEFT folder, both read and checked before any model is touched."""
    config = copy.copy(config or PeftConfig.from_pretrained(directory))
    tuner_for(config.peft_type).check_loadable(config, is_trainable)
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
        tensors = load_file(str(path))
    except Exception as err:   # safetensors raises its own error types for broken files
        raise ValueError(f"Could not read {path}: {err}. The file is corrupted or truncated (an "
                         "interrupted save or copy?); save or download the adapter again.") from None
    check_finite(tensors, path)
    return tensors


def check_finite(tensors: dict[str, torch.Tensor], source) -> None:
    """Refuse NaN or inf in an adapter's weights: loaded, they would make every logit NaN."""
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise ValueError(f"{source} holds non-finite weights (NaN or inf) in {_listing(bad)}; loaded, they would "
                         "make every output NaN. The adapter diverged in training or the file was damaged: "
                         "retrain it (a lower learning rate) or save it again.")


# Config fields that size what an adapter builds (ranks, prompt lengths): checked against the base
# model and the file before anything is allocated.
SIZE_FIELDS = ("r", "init_r", "target_r", "num_virtual_tokens")


def check_sizes(config: PeftConfig, tensors: dict[str, torch.Tensor], model) -> None:
    """A size in a config read from a file cannot exceed every dimension of the base model and of
    the file's own tensors: no rank or prompt length needs more (a rank is at most the smaller side
    of a matrix). A larger one (r = 10**9) would reach the allocator before any shape check."""
    dims = [d for t in (*tensors.values(), *model.parameters(), *model.buffers()) for d in t.shape]
    largest = max(dims, default=0)
    sizes = {name: getattr(config, name) for name in SIZE_FIELDS if isinstance(getattr(config, name, None), int)}
    sizes |= {f"rank_pattern[{k!r}]": v for k, v in (getattr(config, "rank_pattern", None) or {}).items()
              if isinstance(v, int)}
    too_large = {name: size for name, size in sizes.items() if size > largest}
    if too_large:
        listing = ", ".join(f"{name}={size:,}" for name, size in too_large.items())
        raise ValueError(f"The adapter config asks for {listing}, more than any dimension of this base model or of "
                         f"the saved tensors (at most {largest:,}): the config does not belong to these weights "
                         "or was altered. Nothing was built.")


def _listing(keys, n=5) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" (and {len(keys) - n} more)" if len(keys) > n else "")


@torch.no_grad()
def load_into(expected: dict[str, torch.Tensor], optional: dict[str, torch.Tensor],
              tensors: dict[str, torch.Tensor], source="the adapter folder") -> None:
    """Copy `tensors` into the live `expected` adapter tensors, all or nothing.

    `optional` are tensors that peft writes with this kind of adapter besides its own (whole
    embedding matrices when target_modules names embed_tokens or lm_head), under disk names;
    nothing else is ever written. Where such a tensor belongs to the base model and the file's
    values differ from it, it is copied (as peft does) and a warning says which.
    """
    base = {k: t for k, t in optional.items() if all(t is not e for e in expected.values())}
    problems = []
    missing = expected.keys() - tensors.keys()
    unexpected = tensors.keys() - expected.keys() - optional.keys()
    if missing:
        problems.append(f"missing weights: {_listing(missing)}. The folder was saved with another "
                        "config (target_modules, use_dora, bias...) or for another model.")
    if unexpected:
        problems.append(f"unexpected weights: {_listing(unexpected)}. They belong to modules this "
                        "model does not have: was the adapter trained on another architecture?")
    wrong = [f"{k}: {tuple(t.shape)} in the file, {tuple(expected.get(k, optional.get(k)).shape)} here"
             for k, t in tensors.items() if k in expected.keys() | optional.keys()
             and t.shape != expected.get(k, optional.get(k)).shape]
    if wrong:
        problems.append(f"shape mismatches: {'; '.join(wrong[:5])}. The adapter was trained on a base "
                        "model of other sizes (hidden size, vocabulary) or the config's r differs.")
    if problems:
        raise ValueError(f"Cannot load {source}; nothing was changed. " + " ".join(problems))
    changed = [k for k, t in tensors.items() if k in base and not torch.equal(t.to(base[k].dtype), base[k])]
    if changed:
        warnings.warn(f"{source} also holds base-model weights that differ from this model's: "
                      f"{_listing(changed)}. peft saves them with an adapter that targets embed_tokens or "
                      "lm_head, and loads them; so does peftlab: they were copied into the model.", stacklevel=2)
    for k, t in tensors.items():
        target = expected.get(k, optional.get(k))
        target.copy_(t.to(target.dtype))
