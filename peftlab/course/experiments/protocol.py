"""One protocol for comparing methods: the same task, base model, step budget and batches for every
method, its learning rate picked on the validation split from a small grid, several seeds.

`run_method` is one training run and its scores; `compare` runs a table of methods through the
protocol and returns what `save_results` writes. Notebooks call `run_method` for their live
spot checks, so a stored number and its re-run come from the same code.
"""
import copy
import json
import math
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from peftlab.model import get_peft_model
from peftlab.workbook.batching import PromptTargetCollator
from peftlab.workbook.data import LABEL_WORDS, load_task
from peftlab.workbook.evaluate import exact_match, label_accuracy
from peftlab.workbook.memory import parameter_counts
from peftlab.workbook.training import train
from peftlab.workbook.zoo import load_base_model

RESULTS_DIR = Path(__file__).resolve().parents[3] / "results"


@dataclass(frozen=True)
class Method:
    """A way to fine-tune: a config for get_peft_model (None: full fine-tuning), a learning-rate grid,
    what to do to the base model first, in place (QLoRA: quantize it), what to call after each
    optimizer step (`on_step(model)` returns train's on_step; AdaLoRA: its rank allocation), and what
    else to report about the trained model (`measure(model)` returns a dict; stored per seed)."""
    config: Callable[[], object] | None
    lrs: tuple[float, ...]
    prepare_base: Callable[[object], object] | None = None
    on_step: Callable[[torch.nn.Module], Callable[[int], None]] | None = None
    measure: Callable[[torch.nn.Module], dict] | None = None


def score(model, tokenizer, task_name: str, rows) -> float:
    """The task's metric: label accuracy for sentiment, greedy exact match otherwise."""
    if task_name == "sentiment":
        return label_accuracy(model, tokenizer, rows, LABEL_WORDS)
    return exact_match(model, tokenizer, rows)


def run_method(method: Method, lr: float, seed: int, *, base_name: str, task_name: str, steps: int,
               batch_size: int, eval_rows: dict[str, list], progress: bool = False, keep_model: bool = False,
               observe: Callable[[torch.nn.Module], Callable[[int], None]] | None = None) -> dict:
    """Train one method once; return its trainable parameters, scores on `eval_rows` and final loss,
    and with `keep_model` the trained model too. `observe(model)`, if given, is called on the model
    about to train and returns train's `on_step`, to watch the run. (No timings: these runs share the
    machine with other work; notebooks time what they claim live.)"""
    base, tokenizer = load_base_model(base_name)
    if method.prepare_base is not None:
        method.prepare_base(base)
    torch.manual_seed(seed)
    model = copy.deepcopy(base) if method.config is None else get_peft_model(base, method.config())
    task = load_task(task_name)
    history = train(model, task["train"], PromptTargetCollator(tokenizer), steps=steps, lr=lr,
                    batch_size=batch_size, seed=seed, progress=progress, desc=f"lr {lr:g}, seed {seed}",
                    on_step=chain_steps(*(make(model) for make in (method.on_step, observe) if make is not None)))
    scores = {split: round(score(model, tokenizer, task_name, rows), 4) for split, rows in eval_rows.items()}
    result = {"trainable": parameter_counts(model)["trainable"], **scores,
              "final_loss": round(sum(history.loss[-10:]) / 10, 4),
              **({"measured": method.measure(model)} if method.measure is not None else {})}
    return {**result, "model": model} if keep_model else result


def chain_steps(*calls: Callable[[int], None]) -> Callable[[int], None] | None:
    """One on_step that makes every call in turn (None when there is none)."""
    if not calls:
        return None

    def on_step(step: int) -> None:
        for call in calls:
            call(step)
    return on_step


MAX_GRID_STEPS = 3   # how far past its first grid a method's learning rate may be looked for


def next_rate(lr: float, up: bool) -> float:
    """The neighbour of `lr` on the 1-3-10 ladder of learning rates (3e-3 -> 1e-2 up, -> 1e-3 down)."""
    exponent = math.floor(math.log10(lr) + 1e-9)
    ladder = [m * 10.0 ** e for e in (exponent - 1, exponent, exponent + 1) for m in (1, 3)]
    nearest = min(range(len(ladder)), key=lambda i: abs(math.log(ladder[i] / lr)))
    return float(f"{ladder[nearest + (1 if up else -1)]:.1g}")


def pick_rate(lrs: tuple[float, ...], run_at: Callable[[float], list[dict]]) -> tuple[float, dict[float, list[dict]]]:
    """The learning rate with the best mean validation score, and every run made to find it.

    A best rate at the edge of the grid says the grid was wrong (the optimum may lie beyond it), so
    the grid grows one ladder step past that edge, up to MAX_GRID_STEPS times, until the best rate is
    interior. `run_at(lr)` returns one run per seed, each with a "validation" score. A grid of one
    rate is a rate fixed elsewhere: no search."""
    runs = {lr: run_at(lr) for lr in sorted(lrs)}

    def scores() -> dict[float, list[float]]:
        return {lr: [r["validation"] for r in runs[lr]] for lr in sorted(runs)}

    for _ in range(MAX_GRID_STEPS if len(runs) > 1 else 0):
        best, grid = chosen_rate(scores()), sorted(runs)
        if grid[0] < best < grid[-1]:
            break
        new = next_rate(best, up=best == grid[-1])
        runs[new] = run_at(new)
    return chosen_rate(scores()), {lr: runs[lr] for lr in sorted(runs)}


def chosen_rate(validation_by_lr: dict) -> float:
    """pick_rate's choice on a grid of {rate: per-seed validation scores}: the best mean score; among
    rates tied for it an interior one (a tie that reaches an edge is no reason to look past it)."""
    means = {float(lr): statistics.mean(scores) for lr, scores in validation_by_lr.items()}
    grid, top = sorted(means), max(means.values())
    best = [lr for lr in grid if means[lr] == top]
    return ([lr for lr in best if grid[0] < lr < grid[-1]] or best)[0]


def is_interior(row: dict) -> bool:
    """Whether a stored row's chosen rate lies strictly inside the grid it was chosen from."""
    grid = sorted(float(lr) for lr in row["validation_by_lr"])
    return grid[0] < row["lr"] < grid[-1]


def grew_from(row: dict, lrs: tuple[float, ...]) -> bool:
    """Whether a stored row's grid is `lrs` plus at most MAX_GRID_STEPS rates beyond its edges."""
    grid, start = sorted(float(lr) for lr in row["validation_by_lr"]), sorted(lrs)
    added = [lr for lr in grid if lr < start[0] or lr > start[-1]]
    return set(start) <= set(grid) and len(grid) == len(start) + len(added) and len(added) <= MAX_GRID_STEPS


def compare(methods: dict[str, Method], *, base_name: str, task_name: str, steps: int, batch_size: int,
            seeds: tuple[int, ...], n_validation: int = 200, n_test: int = 500) -> dict:
    """Every method at every learning rate of its grid and every seed; the learning rate with the
    best mean validation score is the method's (see pick_rate: the grid grows past a winning edge),
    and its test scores are what it reports."""
    task = load_task(task_name)
    eval_rows = {"validation": list(task["validation"])[:n_validation], "test": list(task["test"])[:n_test]}
    rows = {}
    for name, method in methods.items():
        best, runs = pick_rate(method.lrs, lambda lr, method=method: [
            run_method(method, lr, s, base_name=base_name, task_name=task_name, steps=steps, batch_size=batch_size,
                       eval_rows=eval_rows) for s in seeds])
        test = [r["test"] for r in runs[best]]
        rows[name] = {"trainable": runs[best][0]["trainable"], "lr": best, "test": test,
                      "test_mean": round(statistics.mean(test), 4), "test_min": min(test), "test_max": max(test),
                      "validation_by_lr": {str(lr): [r["validation"] for r in runs[lr]] for lr in runs}}
        if method.measure is not None:   # what it measured, per seed, at the chosen rate
            rows[name].update({key: [r["measured"][key] for r in runs[best]] for key in runs[best][0]["measured"]})
        print(f"{name:>18}: lr {best:g}, test {rows[name]['test_mean']:.3f} "
              f"[{rows[name]['test_min']:.3f}-{rows[name]['test_max']:.3f}], {rows[name]['trainable']:,} trainable",
              flush=True)
    return {"settings": {"base_model": base_name, "task": task_name, "steps": steps, "batch_size": batch_size,
                         "seeds": list(seeds), "n_validation": len(eval_rows["validation"]),
                         "n_test": len(eval_rows["test"])},
            "rows": rows}


def run_stored_rows(results_name: str, methods: dict[str, Method], names: dict[str, str], seed: int, *,
                    base_name: str, task_name: str, steps: int, batch_size: int, n_test: int) -> dict[str, float]:
    """Rows of a stored comparison trained again on another `seed`, each at its stored learning rate: the
    test score of `methods[name]` for every `short: name` of `names`, on the first `n_test` test rows."""
    rows = load_results(results_name)["rows"]
    test = {"test": list(load_task(task_name)["test"])[:n_test]}
    return {short: run_method(methods[name], rows[name]["lr"], seed, base_name=base_name, task_name=task_name,
                              steps=steps, batch_size=batch_size, eval_rows=test)["test"]
            for short, name in names.items()}


def save_results(name: str, results: dict, seconds: float) -> Path:
    """Write results/<name>.json with the versions and machine it ran on."""
    import transformers
    results = {**results, "ran_on": {"date": time.strftime("%Y-%m-%d"), "seconds": round(seconds),
                                     "torch": torch.__version__, "transformers": transformers.__version__,
                                     "threads": torch.get_num_threads(), "machine": platform.machine(),
                                     "python": platform.python_version()}}
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    return path


def run_and_save(name: str, produce: Callable[[], dict], threads: int) -> Path:
    """An experiment script's main(): `threads` torch threads, `produce()` timed, its results saved as
    results/<name>.json (see save_results), and where they went printed."""
    torch.set_num_threads(threads)
    start = time.perf_counter()
    results = produce()
    path = save_results(name, results, time.perf_counter() - start)
    print(f"written to {path}")
    return path


def load_results(name: str) -> dict:
    path = RESULTS_DIR / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"No stored results {path.name}; produce them with "
                                f"`python -m peftlab.course.experiments.{name}`.")
    return json.loads(path.read_text())
