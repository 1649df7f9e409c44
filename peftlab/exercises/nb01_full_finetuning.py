"""Checkers for 01_full_finetuning."""
import copy

import torch

from ..memory import measured_bytes, memory_breakdown
from .checking import Verdict, attempted, call_stub, report

GiB, GB = 2**30, 1e9


def check_memory_7b(answer_gib) -> Verdict:
    """🌱 Memory (GiB) to fully fine-tune a 7B model with Adam in mixed precision, activations excluded."""
    if not attempted(answer_gib):
        return report("7B memory", None)
    truth = memory_breakdown(int(7e9), precision="mixed")["total"]
    if abs(answer_gib - truth / GiB) <= 0.01 * truth / GiB:
        return report("7B memory", True, f"{truth / GiB:.1f} GiB: 16 bytes for every parameter.")
    if abs(answer_gib - truth / GB) <= 0.01 * truth / GB:
        return report("7B memory", False, f"{answer_gib:.1f} is in GB (1e9 bytes); the question asks "
                      "for GiB (2**30 bytes). Divide the bytes by 2**30.")
    for missing, per_param in [("the fp32 master weights", 12), ("the two Adam moments", 8),
                               ("the gradients", 14)]:
        if abs(answer_gib - 7e9 * per_param / GiB) <= 0.01 * 7e9 * per_param / GiB:
            return report("7B memory", False, f"close: you left out {missing}.")
    return report("7B memory", False, "count bytes per parameter: 16-bit weight (2), 16-bit gradient (2), "
                  "fp32 master weight (4), Adam's two fp32 moments (4 + 4).")


def check_freeze_all_but_last_layer(fn, model) -> Verdict:
    """🌿 A function that leaves only the last decoder layer and the final norm trainable."""
    probe = copy.deepcopy(model)
    if call_stub(fn, probe) is None and all(p.requires_grad for p in probe.parameters()):
        return report("freeze all but the last layer", None)
    last = len(probe.model.layers) - 1
    should_train = {n: n.startswith(f"model.layers.{last}.") or n.startswith("model.norm.")
                    for n, _ in probe.named_parameters()}
    wrong = [n for n, p in probe.named_parameters() if p.requires_grad != should_train[n]]
    if not wrong:
        n_train = sum(p.numel() for p in probe.parameters() if p.requires_grad)
        return report("freeze all but the last layer", True, f"{n_train:,} parameters train.")
    return report("freeze all but the last layer", False, f"{len(wrong)} parameters have the wrong "
                  f"requires_grad, e.g. {wrong[0]!r}. Set p.requires_grad = False on every parameter, "
                  f"then True on those of model.layers[{last}] and model.norm.")


def check_adam_state_bytes(fn, model) -> Verdict:
    """🌳 Sum the bytes of Adam's state tensors (exp_avg, exp_avg_sq), skipping the step counter."""
    probe = copy.deepcopy(model).train()
    optimizer = torch.optim.AdamW(probe.parameters(), lr=1e-3)
    ids = torch.arange(8).view(1, 8)
    probe(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    answer = call_stub(fn, optimizer)
    if not attempted(answer):
        return report("Adam state bytes", None)
    truth = measured_bytes(probe, optimizer)["Adam moments"]
    if answer == truth:
        return report("Adam state bytes", True, f"{truth:,} bytes = 8 bytes per parameter.")
    if answer > truth:
        return report("Adam state bytes", False, f"{answer:,} > {truth:,}: did you count the 'step' "
                      "entry? It is a bookkeeping scalar, not a per-parameter state.")
    return report("Adam state bytes", False, f"{answer:,} != {truth:,}. Walk optimizer.state.values(); "
                  "each is a dict of tensors: add t.numel() * t.element_size().")
