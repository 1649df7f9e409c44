"""Reading a stored comparison row (protocol.compare's `test`, `test_mean`, `test_min`, `test_max`):
as text, as a point with its min-max bar over seeds, and as a claim that holds on every seed."""


def spread(row: dict) -> str:
    """'mean [min-max]' of a row's test scores over seeds."""
    return f"{row['test_mean']:.3f} [{row['test_min']:.3f}-{row['test_max']:.3f}]"


def beats(a: dict, b: dict) -> bool:
    """A beats B on every seed: A's worst seed scores above B's best."""
    return a["test_min"] > b["test_max"]


def plot_spread(ax, xs, rows: list[dict], label: str, **style):
    """Means joined by a line, each with a bar from the worst to the best seed."""
    means = [row["test_mean"] for row in rows]
    below = [row["test_mean"] - row["test_min"] for row in rows]
    above = [row["test_max"] - row["test_mean"] for row in rows]
    return ax.errorbar(xs, means, yerr=[below, above], capsize=3, marker="o", label=label, **style)
