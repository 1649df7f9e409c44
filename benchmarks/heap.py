"""What a CPU training step costs in memory, measured two ways.

- peak RSS (VmHWM, reset through /proc/self/clear_refs): what the operating system sees, including
  what glibc's heap keeps after a free. It depends on the order of allocations and frees, so it
  moves from run to run and between two programs that hold the same tensors.
- peak heap in use (glibc's mallinfo2: bytes handed out and not yet freed, read after every aten op
  through a TorchDispatchMode, forward and backward): the tensors and what torch allocates with
  them, without the allocator's slack. It repeats to the byte for the same program and batch.
"""
import ctypes
import re

from torch.utils._python_dispatch import TorchDispatchMode


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


_libc = ctypes.CDLL("libc.so.6")
_libc.mallinfo2.restype = _MallInfo2


def heap_in_use() -> int:
    """Bytes glibc has handed out and not had back: the arena's chunks in use plus mmapped blocks."""
    info = _libc.mallinfo2()
    return info.uordblks + info.hblkhd


def rss_kib(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))


def reset_rss_peak() -> bool:
    """Make VmHWM forget earlier peaks; False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class HeapPeak(TorchDispatchMode):
    """The highest heap_in_use() seen after any aten op while the mode is on (backward included:
    the autograd engine runs CPU work under the caller's modes)."""

    def __init__(self):
        super().__init__()
        self.start = self.peak = heap_in_use()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.peak = max(self.peak, heap_in_use())
        return out



def step_heap_peak(step) -> int:
    """The highest heap in use, in bytes, during one call of `step`."""
    with HeapPeak() as peak:
        step()
    return peak.peak
