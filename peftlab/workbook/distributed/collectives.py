"""Counting what a rank hands to torch.distributed's collectives: measured, not computed.

`CollectiveLog` is a TorchDispatchMode: while it is active, every collective that goes through PyTorch's
dispatcher (FSDP's all-gathers and reduce-scatters, the all-reduces inside DTensor operations such as
the gradient norm of clipping) is seen with its tensors, and their sizes are written down. A collective
is recorded by the size of the *whole* tensor it produces or consumes, the same on every rank:

    all-gather      the gathered output  (every rank contributes 1/N of it)
    reduce-scatter  the input            (every rank keeps 1/N of the reduced result)
    all-reduce      the tensor

What crosses the wires per rank follows from that (ring algorithms; Patarasuk & Yuan 2009): (N-1)/N of
it for an all-gather or a reduce-scatter, 2(N-1)/N for an all-reduce (`ring_bytes_sent`).
DDP's all-reduces run inside its C++ reducer, which the dispatcher never sees; runner.py counts those
with a DDP communication hook instead.
"""
import weakref
from collections import defaultdict

import torch
from torch.distributed.tensor import DTensor
from torch.utils._python_dispatch import TorchDispatchMode

# op name (as the dispatcher spells it, without the overload) -> (kind, index of the tensor that is "the whole")
COLLECTIVES = {
    "_allgather_base_": ("all-gather", 0),                 # (output, input, group, ...)
    "all_gather_into_tensor": ("all-gather", None),        # functional: (input, group_size, group) -> output
    "_reduce_scatter_base_": ("reduce-scatter", 1),        # (output, input, group, ...)
    "reduce_scatter_tensor": ("reduce-scatter", 0),        # functional: (input, op, group_size, group)
    "allreduce_": ("all-reduce", 0),                       # ([tensors], group, op, ...)
    "all_reduce": ("all-reduce", 0),                       # functional: (input, op, group)
}
NAMESPACES = ("c10d", "_c10d_functional")
# What a ring algorithm makes each of N ranks send, per byte of the collective's whole tensor.
RING_FACTOR = {"all-gather": lambda n: (n - 1) / n, "reduce-scatter": lambda n: (n - 1) / n,
               "all-reduce": lambda n: 2 * (n - 1) / n}


def nbytes(tensors) -> int:
    tensors = tensors if isinstance(tensors, list | tuple) else [tensors]
    return sum(t.numel() * t.element_size() for t in tensors)


class CollectiveLog(TorchDispatchMode):
    """`with CollectiveLog() as log: ...`; then `log.events` [(kind, bytes)] in order and `log.bytes_by_kind()`.
    A collective this log does not know (a broadcast, an all-to-all) is an error, not a silent omission.
    It also follows the buffers that all-gathers fill, while they live (`gathering_bytes`)."""

    def __init__(self):
        super().__init__()
        self.events: list[tuple[str, int]] = []
        self.gather_buffers: list[weakref.ref] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if any(issubclass(t, DTensor) for t in types):
            return NotImplemented      # let DTensor turn the op into plain ops and collectives, then see those
        out = func(*args, **(kwargs or {}))
        if func.namespace in NAMESPACES:
            self._record(func.__name__.split(".")[0], args, out)
        return out

    def _record(self, name: str, args, out) -> None:
        if name in ("wait_tensor", "_wrap_tensor_autograd", "barrier"):     # bookkeeping, moves nothing
            return
        if name not in COLLECTIVES:
            raise NotImplementedError(f"CollectiveLog does not know how to size the collective {name!r}.")
        kind, index = COLLECTIVES[name]
        whole = out if index is None else args[index]
        self.events.append((kind, nbytes(whole)))
        if kind == "all-gather" and isinstance(whole, torch.Tensor):
            self.gather_buffers.append(weakref.ref(whole))

    def gathering_bytes(self) -> int:
        """Bytes of the all-gather output buffers still alive. FSDP copies a gathered buffer into the unit's
        parameters, then keeps the buffer until it issues the next gather (in the backward pass, the next
        block's, gathered ahead)."""
        live = [t for t in (ref() for ref in self.gather_buffers) if t is not None]
        self.gather_buffers = [weakref.ref(t) for t in live]
        return sum(t.untyped_storage().nbytes() for t in live)

    def bytes_by_kind(self) -> dict[str, int]:
        totals = defaultdict(int)
        for kind, size in self.events:
            totals[kind] += size
        return dict(totals)

    def counts_by_kind(self) -> dict[str, int]:
        counts = defaultdict(int)
        for kind, _ in self.events:
            counts[kind] += 1
        return dict(counts)


def ring_bytes_sent(bytes_by_kind: dict[str, float], world_size: int) -> float:
    """Bytes each rank sends for these collectives with ring algorithms (what a ring all-reduce of G bytes
    costs: 2 (N-1)/N G; an all-gather or reduce-scatter of S bytes: (N-1)/N S)."""
    return sum(RING_FACTOR[kind](world_size) * size for kind, size in bytes_by_kind.items())


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes this rank holds of `t`: its local shard for a DTensor, all of it otherwise."""
    local = t.to_local() if isinstance(t, DTensor) else t
    return local.numel() * local.element_size()
