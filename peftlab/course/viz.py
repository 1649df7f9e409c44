"""Plots the notebooks share (matplotlib). Each returns the Axes so a notebook can add to it."""
import matplotlib.pyplot as plt
import numpy as np

from peftlab.workbook.training import History


def smooth(values, window: int = 10) -> np.ndarray:
    """Trailing moving average: the first points average over what exists so far."""
    values = np.asarray(values, dtype=float)
    cumsum = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    return (cumsum[1:] - cumsum[np.maximum(np.arange(1, len(values) + 1) - window, 0)]) / counts


def plot_history(history: History, metric: str | None = None, label: str | None = None,
                 ax=None, title: str | None = None, window: int = 10, loss_unit: str = "nats/token"):
    """Training loss (smoothed) against steps; with `metric`, its evaluations on a second axis."""
    ax = ax or plt.subplots()[1]
    line, = ax.plot(history.steps, smooth(history.loss, window), label=f"{label or 'training'} loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"loss ({loss_unit}, {window}-step average)")   # a language model's: nats per token
    ax.set_title(title or "Training curve")
    handles = [line]
    if metric:
        steps, values = history.metric(metric)
        twin = ax.twinx()
        mline, = twin.plot(steps, values, "o--", color="tab:orange", label=f"{label or ''} {metric}".strip())
        twin.set_ylabel(metric)
        if all(0 <= v <= 1 for v in values):   # a share: show all of [0, 1], not a zoom onto 0.998-1.000
            twin.set_ylim(0, 1.02)
        twin.grid(False)
        handles.append(mline)
    ax.legend(handles=handles, loc="center right")
    return ax


def plot_bars(values: dict[str, float], ylabel: str, title: str, ax=None, fmt: str = "{:.2f}"):
    """One bar per entry, value written on top."""
    ax = ax or plt.subplots()[1]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"][:len(values)]
    bars = ax.bar(list(values), list(values.values()), color=colors)
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


# --- 04 inside LoRA: rank, spectrum, subspaces ----------------------------------------------

def plot_rank_sweep(ranks, accuracies: dict[str, list[float]], params=None, baseline: float | None = None,
                    ax=None, title: str = "Accuracy against LoRA rank", ylim=(0.0, 1.02)):
    """Accuracy (one line per entry of `accuracies`) against rank on a log2 axis; with
    `params` (trainable parameters per rank), a second axis shows what each rank costs;
    `baseline` (e.g. the base model's accuracy) is drawn as a dashed line."""
    ax = ax or plt.subplots()[1]
    handles = []
    for label, values in accuracies.items():
        handles += ax.plot(ranks, values, "o-", label=label)
    if baseline is not None:
        handles.append(ax.axhline(baseline, color="tab:red", linestyle="--", label="base model, no adapter"))
    ax.set_ylim(*ylim)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(ranks), [str(r) for r in ranks])
    ax.set_xlabel("rank r")
    ax.set_ylabel("accuracy (fraction correct)")
    ax.set_title(title)
    if params is not None:
        twin = ax.twinx()
        handles += twin.plot(ranks, params, "s:", color="tab:gray", label="trainable parameters")
        twin.set_yscale("log")
        twin.set_ylabel("trainable parameters")
        twin.grid(False)
    ax.legend(handles=handles, loc="lower right")
    return ax


def plot_spectra(spectra: dict[str, "np.ndarray"], ax=None, normalize: bool = True,
                 title: str = "Singular values of the update"):
    """Singular values (descending) of one or more matrices; normalized to the largest by default."""
    ax = ax or plt.subplots()[1]
    for label, values in spectra.items():
        values = np.asarray(values, dtype=float)
        values = values / values[0] if normalize and values[0] > 0 else values
        ax.plot(np.arange(1, len(values) + 1), values, ".-", label=label)
    ax.set_xlabel("index i of the singular value (largest first)")
    ax.set_ylabel("σ_i / σ_1" if normalize else "σ_i")
    ax.set_title(title)
    ax.legend()
    return ax


def plot_subspace_similarity(phi, ax=None, title: str = "Subspace similarity φ(i, j)",
                             xlabel: str = "j", ylabel: str = "i", vmax: float = 1.0):
    """Heatmap of φ[i-1, j-1] (values in [0, 1]), rows i and columns j counted from 1."""
    ax = ax or plt.subplots()[1]
    phi = np.asarray(phi, dtype=float)
    image = ax.imshow(phi, vmin=0.0, vmax=vmax, cmap="viridis", aspect="auto", origin="upper",
                      extent=(0.5, phi.shape[1] + 0.5, phi.shape[0] + 0.5, 0.5))
    ax.figure.colorbar(image, ax=ax, label="φ (0: orthogonal, 1: contained)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(False)
    return ax


def plot_loss_curves(histories: dict[str, History], ax=None, window: int = 10,
                     title: str = "Training loss", styles: dict[str, str] | None = None):
    """Several runs' smoothed training losses on one axis, one labelled line per run."""
    ax = ax or plt.subplots()[1]
    for label, history in histories.items():
        ax.plot(history.steps, smooth(history.loss, window), (styles or {}).get(label, "-"), label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"loss (nats/token, {window}-step average)")
    ax.set_title(title)
    ax.legend()
    return ax
