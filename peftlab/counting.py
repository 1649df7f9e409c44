"""Counting what a model holds: its weights (trainable and frozen) and the bytes they take.

The library needs these (PeftModel.print_trainable_parameters, NF4's report) and so does the
workbook (memory arithmetic, the notebooks' tables), which imports them from here.
"""
import torch


def weight_count(param: torch.Tensor) -> int:
    """How many weights a parameter holds: its number of elements, or the number it declares as
    `logical_numel`: a packed tensor (two 4-bit weights in each byte) declares the weights it
    holds, a quantization's scaling constants declare 0 (they are storage, not weights)."""
    declared = getattr(param, "logical_numel", None)
    return param.numel() if declared is None else declared


def parameter_counts(model: torch.nn.Module) -> dict[str, float]:
    """Trainable and total parameters (shared tensors, e.g. tied embeddings, counted once; a
    packed 4-bit weight counted as the weights it holds, not its bytes)."""
    unique = {id(p): p for p in model.parameters()}.values()
    total = sum(weight_count(p) for p in unique)
    trainable = sum(weight_count(p) for p in unique if p.requires_grad)
    return {"trainable": trainable, "total": total, "percent": 100.0 * trainable / max(total, 1)}


def stored_bytes(model: torch.nn.Module) -> int:
    """Bytes of every parameter and buffer the model holds (a shared tensor once): what it weighs in
    memory, packed 4-bit weights and their scaling constants included."""
    tensors = {t.data_ptr(): t for t in (*model.parameters(), *model.buffers()) if t.numel()}
    return sum(t.numel() * t.element_size() for t in tensors.values())
