"""modules_to_save: modules trained in full, one copy per adapter (a new classification head).

peft's layout, so keys read the same: `classifier.original_module.weight` is the frozen original,
`classifier.modules_to_save.default.weight` the trained copy of adapter "default". A saved
adapter stores the copy under the module's own name, `classifier.weight`.
"""
import copy

import torch
from torch import nn

from .wrapper import AdapterWrapper, route_rows

__all__ = ["ModulesToSaveWrapper"]


class ModulesToSaveWrapper(AdapterWrapper):
    """The original module and one trainable full copy per adapter; the active copy runs."""
    _inner = "original_module"
    adapter_layer_names = ("modules_to_save",)

    def __init__(self, original_module: nn.Module):
        super().__init__()
        self.original_module = original_module
        self.modules_to_save = nn.ModuleDict()

    def update_layer(self, adapter_name: str, config=None) -> None:
        self.modules_to_save[adapter_name] = copy.deepcopy(self.original_module)

    def _tensors(self, attrs, adapter_name: str) -> dict[str, torch.Tensor]:
        # peft saves the copy under the module's own name: "classifier.weight".
        if adapter_name not in self:
            return {}
        return dict(self.modules_to_save[adapter_name].state_dict(keep_vars=True))

    def _module_for(self, name: str) -> nn.Module:
        return self.modules_to_save[name] if name in self else self.original_module

    def forward(self, x, *args, **kwargs):
        if self.batch_adapter_names is not None and not self.disabled:
            return route_rows(self.batch_adapter_names, x,
                              lambda name, rows: self._module_for(name)(rows, *args, **kwargs))
        active = self.running_adapters()
        if self.disabled or not active:
            return self.original_module(x, *args, **kwargs)
        return self.modules_to_save[active[0]](x, *args, **kwargs)

    def unwrap(self, merged: list[str]) -> nn.Module:
        """A merged model keeps the merged adapter's trained copy, an unloaded one the original."""
        kept = [self.modules_to_save[a] for a in merged if a in self]
        return kept[0] if kept else self.original_module
