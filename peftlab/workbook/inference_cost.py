"""What a forward pass costs: how many torch operations it calls, and how long it takes.

Timing on a shared CPU is noisy; counting operations is exact. At batch size 1 on small models the
two agree (the time goes to calling many small operations), so notebooks assert on the count and
show the time beside it.
"""
import time
from collections import Counter

import torch
from torch.overrides import TorchFunctionMode


class _CountCalls(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls[getattr(func, "__name__", str(func))] += 1
        return func(*args, **(kwargs or {}))


@torch.inference_mode()
def forward_operations(model, inputs: dict) -> Counter:
    """Each torch function (F.linear, matmul, add, ...) called by one forward pass, with its count."""
    with _CountCalls() as counter:
        model(**inputs)
    return counter.calls


@torch.inference_mode()
def fastest_forward_ms(models: dict, inputs: dict, rounds: int = 25, calls: int = 5) -> dict[str, float]:
    """Each model's fastest time, in ms, for one forward pass over `inputs`.

    The models take turns, round after round, so that a busy spell of the machine hits them alike; the
    fastest round is kept because noise only ever adds time.
    """
    if rounds < 1 or calls < 1:
        raise ValueError(f"rounds and calls must be at least 1, got rounds={rounds}, calls={calls}")
    best = {name: float("inf") for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            for _ in range(calls):
                model(**inputs)
            best[name] = min(best[name], (time.perf_counter() - start) / calls * 1e3)
    return best
