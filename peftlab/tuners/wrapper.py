"""What every module that a layer method puts into a model shares: named adapters, on/off, routing.

Two kinds of wrapper live in an adapted model, and the layer tuner treats them alike:
- a method's layer (`layer.BaseTunerLayer`: LoRA, IA3...) around a targeted layer;
- `ModulesToSaveWrapper` around a module trained in full (a new classification head).

Both keep per-adapter state in dicts keyed by adapter name, know which adapters are active,
can be switched off (`disabled`), can run each example of a batch through its own adapter
(`batch_adapter_names`), and give back a plain module when the adapters go (`unwrap`).
"""
import torch
from torch import nn


class PassThrough(nn.Module):
    """A wrapper whose missing attributes are read from the module it wraps (named by `_inner`):
    code around a wrapped layer may read `in_features`, `weight`, `padding_idx`..., and
    `peft_model.config` reads the model's config."""
    _inner = ""

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == self._inner:
                raise
            return getattr(getattr(self, self._inner), name)


def route_rows(names: list[str], x: torch.Tensor, run) -> torch.Tensor:
    """Each example through its own adapter: row i of the output is run(names[i], x[i:i+1]),
    computed with one call of `run(name, rows of x)` per distinct name.

    Not every layer sees the batch on its first axis. An input shared by the whole batch (GPT-2's
    position ids, (1, n)) is given to each example; a batch flattened to (examples * tokens, ...)
    (OPT's feed-forward layers) has each example's name repeated for its tokens.
    """
    batch = len(names)
    if x.shape[0] == 1 and batch > 1:
        x = x.expand(batch, *x.shape[1:])
    elif x.shape[0] != batch and x.shape[0] % batch == 0:
        names = [name for name in names for _ in range(x.shape[0] // batch)]
    elif x.shape[0] != batch:
        raise ValueError(f"adapter_names has {batch} entries but the batch has "
                         f"{x.shape[0]} examples; give one adapter name per example.")
    out = None
    for name in dict.fromkeys(names):
        rows = torch.tensor([i for i, n in enumerate(names) if n == name], device=x.device)
        part = run(name, x[rows])
        if out is None:
            out = part.new_empty((len(names),) + part.shape[1:])
        out[rows] = part
    return out


class AdapterWrapper(PassThrough):
    """Bookkeeping shared by every wrapper: which adapters it holds, which run, on/off, deletion.

    A subclass lists its per-adapter dicts: `adapter_layer_names` hold trainable tensors (peft's
    name), `saved_frozen_names` frozen tensors that are saved with the adapter, and
    `other_param_names` any other per-adapter state (rank, scaling, dropout...).
    """
    adapter_layer_names: tuple[str, ...] = ()
    saved_frozen_names: tuple[str, ...] = ()
    other_param_names: tuple[str, ...] = ()

    def __init__(self):
        super().__init__()
        self.active_adapters: list[str] = []
        self.disabled = False
        self.batch_adapter_names: list[str] | None = None   # one adapter name per example

    @property
    def adapters(self) -> list[str]:
        """Names of the adapters this wrapper holds, in the order they were added."""
        names = [n for attr in self.adapter_layer_names + self.saved_frozen_names for n in getattr(self, attr)]
        return list(dict.fromkeys(names))

    def __contains__(self, adapter_name: str) -> bool:   # on every forward: no list built
        return any(adapter_name in getattr(self, attr) for attr in self.adapter_layer_names + self.saved_frozen_names)

    def running_adapters(self) -> list[str]:
        """The active adapters that this wrapper holds (a layer may lack the active adapter)."""
        return [a for a in self.active_adapters if a in self]

    def _tensors(self, attrs, adapter_name: str) -> dict[str, torch.Tensor]:
        """{key relative to this wrapper, adapter name left out: tensor}, e.g. {"lora_A.weight": A}.
        A tensor stored directly in a dict is named after the dict (peft's rule: "ia3_l")."""
        out = {}
        for attr in attrs:
            store = getattr(self, attr)
            if adapter_name not in store:
                continue
            item = store[adapter_name]
            if isinstance(item, torch.Tensor):
                out[attr] = item
            else:
                out.update({f"{attr}.{k}": v for k, v in item.state_dict(keep_vars=True).items()})
        return out

    def trainable_tensors(self, adapter_name: str) -> dict[str, torch.Tensor]:
        return self._tensors(self.adapter_layer_names, adapter_name)

    def adapter_state_dict(self, adapter_name: str) -> dict[str, torch.Tensor]:
        """What is saved for this adapter: its trainable tensors and its saved frozen ones."""
        return self._tensors(self.adapter_layer_names + self.saved_frozen_names, adapter_name)

    def delete(self, adapter_name: str) -> None:
        for attr in self.adapter_layer_names + self.saved_frozen_names + self.other_param_names:
            store = getattr(self, attr)
            if adapter_name in store:
                del store[adapter_name]
        if adapter_name in self.active_adapters:
            self.active_adapters.remove(adapter_name)

    def unwrap(self, merged: list[str]) -> nn.Module:
        """The plain module to put back when the adapters go (`merged`: the adapters merged into it)."""
        raise NotImplementedError
