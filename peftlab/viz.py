"""Plots the notebooks share (matplotlib). Each returns the Axes so a notebook can add to it."""
import matplotlib.pyplot as plt
import numpy as np

from .train import History


def smooth(values, window: int = 10) -> np.ndarray:
    """Trailing moving average: the first points average over what exists so far."""
    values = np.asarray(values, dtype=float)
    cumsum = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    return (cumsum[1:] - cumsum[np.maximum(np.arange(1, len(values) + 1) - window, 0)]) / counts


def plot_history(history: History, metric: str | None = None, label: str | None = None,
                 ax=None, title: str | None = None, window: int = 10):
    """Training loss (smoothed) against steps; with `metric`, its evaluations on a second axis."""
    ax = ax or plt.subplots()[1]
    line, = ax.plot(history.steps, smooth(history.loss, window), label=f"{label or 'training'} loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"loss (nats/token, {window}-step average)")
    ax.set_title(title or "Training curve")
    handles = [line]
    if metric:
        steps, values = history.metric(metric)
        twin = ax.twinx()
        mline, = twin.plot(steps, values, "o--", color="tab:orange", label=f"{label or ''} {metric}".strip())
        twin.set_ylabel(metric)
        twin.grid(False)
        handles.append(mline)
    ax.legend(handles=handles, loc="center right")
    return ax


def plot_bars(values: dict[str, float], ylabel: str, title: str, ax=None, fmt: str = "{:.2f}"):
    """One bar per entry, value written on top."""
    ax = ax or plt.subplots()[1]
    bars = ax.bar(list(values), list(values.values()), color=plt.rcParams["axes.prop_cycle"].by_key()["color"][:len(values)])
    for bar, v in zip(bars, values.values()):
        ax.annotate(fmt.format(v), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=9)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return ax


def plot_memory(breakdowns: dict[str, dict[str, int]], unit: float = 2**30, unit_name: str = "GiB",
                title: str = "Training memory (activations excluded)", ax=None):
    """Stacked bars: for each setting, bytes of weights, gradients, master weights, Adam moments."""
    ax = ax or plt.subplots()[1]
    parts = [k for k in next(iter(breakdowns.values())) if k != "total"]
    bottom = np.zeros(len(breakdowns))
    for part in parts:
        heights = np.array([b[part] for b in breakdowns.values()]) / unit
        ax.bar(list(breakdowns), heights, bottom=bottom, label=part)
        bottom += heights
    ax.set_ylabel(f"memory ({unit_name})")
    ax.set_title(title)
    ax.legend()
    return ax
