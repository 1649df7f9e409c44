"""Which layers get an adapter, and how a layer is swapped for its wrapper.

Rules (the same as `peft`'s, so a config means the same thing in both libraries):
- a list of names: a module matches an entry if its full name equals it or ends with
  "." + entry, so "q_proj" matches every "model.layers.<i>.self_attn.q_proj";
- a string: a regular expression that must match the whole module name;
- "all-linear": every linear layer the method can wrap (nn.Linear, transformers' Conv1D...)
  except the output head (the module `get_output_embeddings()` returns: adapting the
  vocabulary projection is rarely wanted);
- `exclude_modules` (same syntax) removes matches; modules inside `modules_to_save` are never
  wrapped (they are trained in full anyway);
- `layers_to_transform` keeps layers whose index, the number after `layers_pattern` in the
  name (default: the first ".<name>.<number>." after the model's top module, e.g. ".h.3."),
  is listed;
- None: the method's default targets for the model's architecture (`model.config.model_type`).

What a method can wrap, its defaults and its "all-linear" types come from its tuner class
(tuners/layer_tuner.py): every error names that method and lists what it could wrap instead.

Everything is checked before anything is swapped, so a bad config leaves the model untouched;
error messages list the closest module names and what can be targeted.
"""
import difflib
import re

from torch import nn

from peftlab.tuners.wrapper import AdapterWrapper

# Normalisation layers, found by type or by name: LayerNorm tuning wraps them, BitFit shifts their bias.
NORM_TYPES = tuple(t for t in (nn.LayerNorm, getattr(nn, "RMSNorm", None), nn.GroupNorm) if t)   # RMSNorm: torch>=2.4


def is_norm(module: nn.Module) -> bool:
    """LayerNorm, RMSNorm and GroupNorm, torch's or a model's own (LlamaRMSNorm...)."""
    return isinstance(module, NORM_TYPES) or type(module).__name__.endswith(("RMSNorm", "LayerNorm"))


def name_matches(name: str, targets) -> bool:
    """Does module `name` match `targets` (a list of names / suffixes, or a full-match regex)?"""
    if targets is None:
        return False
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def layer_index(name: str, layers_pattern=None) -> int | None:
    """The layer number in a module name: 3 for "transformer.h.3.attn.c_attn" (peft's rule)."""
    if not layers_pattern:
        match = re.match(r".*?\.[^.]*\.(\d+)\.", name)
    else:
        patterns = [layers_pattern] if isinstance(layers_pattern, str) else layers_pattern
        match = next(filter(None, (re.match(rf"(?:^|.*?\.){p}\.(\d+)\.", name) for p in patterns)), None)
    return int(match.group(1)) if match else None


def visible_modules(model: nn.Module) -> dict[str, nn.Module]:
    """{name: module} as a config sees them: an adapter wrapper counts as its base layer, and
    the wrappers' insides (base_layer, lora_A...) are not targets."""
    out, hidden = {}, ()
    for name, module in model.named_modules():
        if not name or (hidden and name.startswith(hidden)):
            continue
        if isinstance(module, AdapterWrapper):
            hidden += (name + ".",)
            module = getattr(module, "base_layer", module)
        out[name] = module
    return out


def output_head_name(model: nn.Module) -> str | None:
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    return next((n for n, m in model.named_modules() if m is head), None) if head is not None else None


def type_names(types) -> str:
    """Readable type names, e.g. for (nn.Linear, Conv1D): nn.Linear, transformers.Conv1D."""
    names = {f"{t.__module__.split('.')[0]}.{t.__name__}".replace("torch.", "nn.") for t in types}
    return ", ".join(sorted(names))


def _closest(word: str, names: list[str]) -> str:
    """A sentence naming the module names (short or full) closest to `word`, or ""."""
    leaves = sorted({n.split(".")[-1] for n in names})
    close = difflib.get_close_matches(str(word), leaves + names, n=5, cutoff=0.5)
    return f" Closest module names: {', '.join(close)}." if close else ""


def _targetable(model: nn.Module, tuner) -> str:
    """Short names of the layers that can be targeted, grouped by type: "q_proj, v_proj (Linear)"."""
    by_type: dict[str, set] = {}
    for name, module in visible_modules(model).items():
        if tuner.wrapper_class(module) is not None:
            by_type.setdefault(type(module).__name__, set()).add(name.split(".")[-1])
    return "; ".join(f"{', '.join(sorted(names))} ({kind})" for kind, names in sorted(by_type.items()))


def _unknown_target_error(model, target, names, tuner, method) -> ValueError:
    return ValueError(
        f"target_modules entry {target!r} matches no module of {type(model).__name__}."
        f"{_closest(target, names)} "
        f"Layers {method} can wrap in this model: {_targetable(model, tuner)}.")


def find_targets(model: nn.Module, config, tuner) -> list[str]:
    """Names of the modules `config` selects for the method of `tuner` (a LayerTuner class or
    instance), checked: every list entry must match something, and every match must be of a
    layer type the method wraps."""
    method = tuner.config_class.peft_type
    modules = visible_modules(model)
    names = list(modules)
    targets = config.target_modules
    if targets is None:
        targets = tuner.default_target_modules(model, config)
    if targets is None:
        raise ValueError(f"target_modules is required for {type(model).__name__} with {method} (no default "
                         f"for it). Layers {method} can wrap: {_targetable(model, tuner)}.")

    if targets == "all-linear":
        head = output_head_name(model)
        linear = tuner.all_linear_types()
        selected = [n for n in names if isinstance(modules[n], linear) and n != head]
        if not selected:
            raise ValueError(f"target_modules='all-linear' finds no linear layer that {method} can wrap in "
                             f"{type(model).__name__}. Layers {method} can wrap: {_targetable(model, tuner)}.")
    else:
        selected = [n for n in names if name_matches(n, targets)]
        if isinstance(targets, str) and not selected:
            raise _unknown_target_error(model, targets, names, tuner, method)
        for t in ([] if isinstance(targets, str) else targets):
            if not any(name_matches(n, [t]) for n in names):
                raise _unknown_target_error(model, t, names, tuner, method)

    saved = config.modules_to_save or []
    selected = [n for n in selected if not name_matches(n, config.exclude_modules)
                and not any(re.match(rf"(^|.*\.){re.escape(m)}($|\..*)", n) for m in saved)]
    if getattr(config, "layers_to_transform", None) is not None:
        wanted = config.layers_to_transform
        wanted = [wanted] if isinstance(wanted, int) else wanted
        found = sorted({i for n in selected if (i := layer_index(n, config.layers_pattern)) is not None})
        selected = [n for n in selected if layer_index(n, config.layers_pattern) in wanted]
        if not selected:
            raise ValueError(f"layers_to_transform={config.layers_to_transform} selects none of the "
                             f"targeted modules; their layer indices are {found}.")
    if not selected:
        raise ValueError(f"target_modules={targets!r} selects no module (after exclude_modules "
                         f"and modules_to_save). Layers {method} can wrap: {_targetable(model, tuner)}.")

    for n in selected:
        module = modules[n]
        if tuner.wrapper_class(module) is None:
            inner = [c for c, m in module.named_modules() if c and tuner.wrapper_class(m) is not None]
            sub = f" Its sublayers that can be targeted: {', '.join(inner[:8])}." if inner else ""
            raise ValueError(f"Cannot wrap {n!r}: it is a {type(module).__name__}, and {method} wraps "
                             f"only {tuner.layer_description()}.{sub}")
    return selected


def find_modules_to_save(model: nn.Module, wanted, optional=()) -> list[str]:
    """Names of the modules to train in full and save; entries in `optional` may match nothing."""
    names = list(visible_modules(model))
    selected = []
    for w in dict.fromkeys(wanted):
        found = [n for n in names if name_matches(n, [w])]
        if not found and w not in optional:
            raise ValueError(f"modules_to_save entry {w!r} matches no module of "
                             f"{type(model).__name__}.{_closest(w, names)}")
        selected += [n for n in found if n not in selected]
    return selected


def refuse_double_injection(model: nn.Module) -> None:
    """get_peft_model twice on one model (a re-run notebook cell) must not stack adapters."""
    if hasattr(model, "peft_config") and hasattr(model, "get_base_model"):   # a PeftModel
        raise ValueError("get_peft_model received a PeftModel. To add another adapter use "
                         "peft_model.add_adapter(name, config); to start over use peft_model.unload().")
    wrapped = next((n for n, m in model.named_modules() if isinstance(m, AdapterWrapper)), None)
    if wrapped is not None:
        raise ValueError(
            f"This model already contains peftlab adapter layers (e.g. {wrapped!r}). get_peft_model "
            "changes the model in place, so running it twice (a re-run notebook cell) would stack "
            "adapters. Recreate the base model (re-run the cell that loads it), or get it back "
            "with peft_model.unload(); to add a second adapter use peft_model.add_adapter(name, config).")


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put `new` where module `name` is (e.g. "model.layers.0.self_attn.q_proj")."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
