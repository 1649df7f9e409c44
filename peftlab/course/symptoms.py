"""What notebook 16's labs measure: each failure's symptom and its mechanism, as numbers.

Every function here measures; none fixes anything. The notebook shows the numbers, its checkers
(course/exercises/nb16_when_peft_goes_wrong.py) measure again to judge a diagnosis, and a function that
trains or steps works on a copy when the caller's model must stay as it was.
"""
import copy

import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from peftlab import PeftModel
from peftlab.workbook.memory import measured_bytes
from peftlab.workbook.zoo import load_base_model

# bfloat16 keeps 8 significant bits (7 stored, 1 implied): between 2**e and 2**(e+1) its numbers are
# 2**(e - 7) apart.
BF16_SIGNIFICANT_BITS = 8


def bf16_spacing(values: torch.Tensor) -> torch.Tensor:
    """The gap between neighbouring bfloat16 numbers at each value's magnitude (its "ulp"), in float32.
    A sum rounded to bfloat16 is off by at most half of it."""
    magnitude = values.detach().float().abs().clamp_min(torch.finfo(torch.bfloat16).tiny)
    return torch.exp2(torch.floor(torch.log2(magnitude)) - (BF16_SIGNIFICANT_BITS - 1))


def _storage(t: torch.Tensor) -> tuple[int, int]:
    storage = t.untyped_storage()
    return storage.data_ptr(), storage.nbytes()


def saved_activation_bytes(model: nn.Module, batch: dict) -> int:
    """Bytes autograd keeps from the forward pass to the backward pass of one training step on `batch`,
    parameters excepted: the activations a method makes you store. Each storage is counted once (views
    of one tensor share it). The model's mode is restored and its gradients cleared afterwards."""
    parameters = {_storage(p)[0] for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        pointer, nbytes = _storage(t)
        if pointer not in parameters:
            kept[pointer] = nbytes
        return t

    was_training = model.training
    model.train()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model(**batch).loss
        loss.backward()
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    return sum(kept.values())


def training_step_flops(model: nn.Module, batch: dict) -> int:
    """Floating-point operations of one forward and backward pass on `batch` (torch's FLOP counter: the
    matrix products, which are nearly all of it). Gradients are cleared afterwards."""
    was_training = model.training
    model.train()
    try:
        with FlopCounterMode(display=False) as counter:
            model(**batch).loss.backward()
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def one_step_change(model: nn.Module, batch: dict, lr: float) -> float:
    """Mean |change of the logits| on `batch` after one AdamW step (no weight decay) at `lr`, taken on a
    copy of `model`: how far one step of this learning rate moves what the model computes."""
    model = copy.deepcopy(model)
    model.eval()
    with torch.no_grad():
        before = model(**batch).logits
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    model.train()
    model(**batch).loss.backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        return (model(**batch).logits - before).abs().mean().item()


def hand_loop(model: nn.Module, optimizer: torch.optim.Optimizer, rows, collate, steps: int,
              batch_size: int = 16, seed: int = 0) -> list[float]:
    """The training loop most tutorials write (forward, backward, step, zero_grad), with the optimizer
    the caller built: the loss of each step."""
    batches = DataLoader(list(rows), batch_size=batch_size, shuffle=True, collate_fn=collate,
                         generator=torch.Generator().manual_seed(seed))
    model.train()
    losses = []
    for _, batch in zip(range(steps), batches):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    """{module name: LoRA layer} of a LoRA model (the layers that hold lora_B)."""
    return {name: m for name, m in model.get_base_model().named_modules() if hasattr(m, "lora_B")}


def untouched_lora_layers(model: nn.Module, adapter: str = "default") -> list[str]:
    """The LoRA layers whose B is still exactly zero: their update B A is zero, the adapter changes nothing there."""
    return [name for name, layer in lora_layers(model).items() if not layer.lora_B[adapter].weight.any()]


def gradient_free_parameters(model: nn.Module, batch: dict) -> list[str]:
    """After one backward pass on `batch`: the trainable parameters that received no gradient at all."""
    was_training = model.training
    model.train()
    try:
        model(**batch).loss.backward()
        return [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)


def entry_matches(model: nn.Module, entries: list[str]) -> dict[str, int]:
    """How many modules each target_modules entry names, by peft's rule for a list: a module whose full
    name is the entry or ends with "." + entry."""
    names = [name for name, _ in model.named_modules()]
    return {entry: sum(name == entry or name.endswith("." + entry) for name in names) for entry in entries}


def modules_in_training_mode(model: nn.Module) -> list[str]:
    """Names of the modules whose training flag is on (dropout at work in them)."""
    return [name for name, m in model.named_modules() if m.training]


def greedy_without_cache(model: nn.Module, input_ids: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Greedy decoding by hand, one full forward pass per token and no key/value cache: the reference a
    model's `generate` must match. Returns input_ids with the new tokens appended (one unpadded row)."""
    ids = input_ids
    with torch.no_grad():
        for _ in range(new_tokens):
            ids = torch.cat([ids, model(input_ids=ids).logits[:, -1:].argmax(-1)], dim=1)
    return ids


def merge_gap(folder, dtype: torch.dtype, batch: dict) -> float:
    """Largest |logit| difference between the adapter in `folder` merged and unmerged, on a base in `dtype`."""
    base = load_base_model()[0].to(dtype)
    model = PeftModel.from_pretrained(base, folder)                 # eval mode: no dropout
    with torch.no_grad():
        unmerged = model(**batch).logits.float()
        model.merge_adapter()
        merged = model(**batch).logits.float()
    return (merged - unmerged).abs().max().item()


def memory_bill(model: torch.nn.Module, batch: dict) -> dict[str, int]:
    """Bytes of each term of the training bill of one AdamW step on `batch`: weights, gradients, Adam moments and
    activations saved for backward. The step is taken: measure a throwaway model."""
    activations = saved_activation_bytes(model, batch)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    model.train()
    model(**batch).loss.backward()
    optimizer.step()
    held = measured_bytes(model, optimizer)
    model.zero_grad(set_to_none=True)
    model.eval()
    return {"weights": held["weights"], "gradients": held["gradients"], "Adam moments": held["Adam moments"],
            "activations saved for backward": activations}


def next_token_shift(model, encoded: dict) -> float:
    """Mean |change| of the next token's logits that the soft prompt of `model` makes, on one unpadded prompt."""
    with torch.no_grad():
        prompted = model(**encoded).logits[:, -1]
        with model.disable_adapter():
            plain = model(**encoded).logits[:, -1]
    return (prompted - plain).abs().mean().item()


def repeated_losses(model, batch: dict, repeats: int = 3) -> list[float]:
    """The loss on `batch`, `repeats` times, under torch.no_grad: one value repeated if the model is deterministic."""
    with torch.no_grad():
        return [round(model(**batch).loss.item(), 5) for _ in range(repeats)]
