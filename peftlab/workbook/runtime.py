"""Seeds, threads, device and plotting defaults: what every notebook sets up first."""
import contextlib
import os
import platform
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def one_thread():
    """Run the block on one CPU thread, then restore the count: a run compared number for number with a
    stored one must use the stored runs' thread count (floating-point sums depend on how they are split)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def pick_device() -> torch.device:
    """cuda if present, else Apple's mps, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def versions() -> dict[str, str]:
    import datasets
    import transformers
    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "datasets": datasets.__version__}


def setup_notebook(seed: int = 0, threads: int | None = None, quiet: bool = False) -> torch.device:
    """Seed everything, cap CPU threads, pick the device, set plot defaults; return the device.

    `threads` defaults to the number of cores (at most 8: these models are too small to gain
    from more, and oversubscribed threads make CPU timings noisy).
    """
    seed_everything(seed)
    torch.set_num_threads(threads or min(os.cpu_count() or 1, 8))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers
    transformers.utils.logging.disable_progress_bar()   # "Loading weights" bars: noise for 1M parameters
    import matplotlib.pyplot as plt
    plt.rcParams.update({"figure.figsize": (6.4, 3.6), "figure.dpi": 90, "axes.grid": True,
                         "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False})
    device = pick_device()
    if not quiet:
        info = versions() | {"device": str(device), "threads": str(torch.get_num_threads())}
        print("  ".join(f"{k} {v}" for k, v in info.items()))
    return device
