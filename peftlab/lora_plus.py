"""LoRA+: a larger learning rate for B than for A (Hayou et al. 2024, arXiv:2402.12354).

In y = W x + s B A x, A and B play different roles: A projects the input (r, in), B maps the
result to the output (out, r). The paper shows that for wide layers one learning rate for
both is inefficient: with B starting at zero, B should learn faster, by a ratio lambda that
they set around 2^4 = 16. This module only builds optimizer parameter groups; `train(...,
param_groups=create_loraplus_param_groups(model, lr=...))` uses them.

Differences from peft's `create_loraplus_optimizer`: everything other than B (A, DoRA
magnitudes, trained biases, modules_to_save copies) gets the base lr, and there is no
separate learning rate for embedding adapters.
"""
from torch import nn

from peftlab.tuners.lora import LoraLayer


def create_loraplus_param_groups(model: nn.Module, lr: float, loraplus_lr_ratio: float = 16.0,
                                 weight_decay: float = 0.0) -> list[dict]:
    """Two optimizer groups over the trainable parameters: B matrices at lr * ratio, the rest at lr.
    B is found by its role in each LoRA layer (`layer.B(name)`), not by the parameter's name."""
    # By storage, not identity: a convolution's B(name) is a (out, r) view of its (out, r, 1, 1) kernel.
    b_factors = {layer.B(name).data_ptr() for layer in model.modules() if isinstance(layer, LoraLayer)
                 for name in layer.adapters}
    groups = {"B": [], "rest": []}
    for param in model.parameters():
        if param.requires_grad:
            groups["B" if param.data_ptr() in b_factors else "rest"].append(param)
    if not groups["B"]:
        raise ValueError("No trainable LoRA B matrix found: is this a LoRA PeftModel with an active, "
                         "trainable adapter?")
    return [{"params": groups["rest"], "lr": lr, "weight_decay": weight_decay},
            {"params": groups["B"], "lr": lr * loraplus_lr_ratio, "weight_decay": weight_decay}]
