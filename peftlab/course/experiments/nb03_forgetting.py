"""Notebook 03's forgetting question over seeds: how much of what pico-llama-1m knew survives training on
sentiment, with full fine-tuning and with the notebook's LoRA (r=4 on q and v), and what it depends on.

Both methods train as notebook 03 trains them (batches of 32, 10% warm-up, cosine) for 40 or 150
steps, over a rate grid around the notebook's rate (1e-3 for full fine-tuning, 3e-3 for LoRA), seeds
0-4. Every run records validation and test accuracy and what the model still knows: the capitals it
ranks first among all 106 (what it prefers), the capitals it writes greedily, and the perplexity of
500 held-out corpus texts (notebook 03's `measure`). Nothing is chosen here: the notebook reads two
comparisons off the grid, at the notebook's own rates, and at matched accuracy (each method at the
gentlest setting, fewest rate x steps, whose mean validation accuracy reaches the ceiling).

    python -m peftlab.course.experiments.nb03_forgetting          # writes results/nb03_forgetting.json
"""
import copy
import statistics

import torch

from peftlab.model import get_peft_model
from peftlab.tuners import LoraConfig
from peftlab.workbook import evaluate
from peftlab.workbook.batching import PromptTargetCollator
from peftlab.workbook.data import LABEL_WORDS, load_corpus, load_task
from peftlab.workbook.training import train
from peftlab.workbook.zoo import load_base_model

from .protocol import run_and_save

SETTINGS = dict(base_model="pico-llama-1m", task="sentiment", batch_size=32, warmup=0.1, seeds=(0, 1, 2, 3, 4),
                n_validation=200, n_test=500, n_heldout=500)
STEP_BUDGETS = (40, 150)
NOTEBOOK_RATES = {"full fine-tuning": 1e-3, "LoRA r=4": 3e-3}   # notebook 03's training cell, 150 steps
GRIDS = {"full fine-tuning": (1e-4, 3e-4, 1e-3, 3e-3), "LoRA r=4": (1e-3, 3e-3, 1e-2, 3e-2)}
CEILING = 0.99   # mean validation accuracy that counts as having learned the task


def lora_config() -> LoraConfig:
    return LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)


def knowledge(model, tokenizer, heldout) -> dict[str, float]:
    """What the model still knows of its pretraining (notebook 03's measure, less the task's accuracy)."""
    return {"ranked recall": round(evaluate.fact_recall_by_rank(model, tokenizer), 4),
            "fact recall": round(evaluate.fact_recall(model, tokenizer), 4),
            "perplexity": round(evaluate.perplexity(model, tokenizer, heldout), 4)}


def run_one(method: str, lr: float, steps: int, seed: int, *, base, tokenizer, task, heldout) -> dict:
    """One training run as notebook 03 trains, and its scores."""
    torch.manual_seed(seed)   # LoRA's random A, drawn before train() seeds the batches
    model = copy.deepcopy(base) if method == "full fine-tuning" else get_peft_model(copy.deepcopy(base), lora_config())
    train(model, task["train"], PromptTargetCollator(tokenizer), steps=steps, lr=lr,
          batch_size=SETTINGS["batch_size"], warmup=SETTINGS["warmup"], seed=seed, progress=False)
    accuracy = {split: round(evaluate.label_accuracy(model, tokenizer, list(task[split])[:SETTINGS[f"n_{split}"]],
                                                     LABEL_WORDS), 4) for split in ("validation", "test")}
    return {**accuracy, **knowledge(model, tokenizer, heldout)}


def run() -> dict:
    base, tokenizer = load_base_model(SETTINGS["base_model"])
    task, heldout = load_task(SETTINGS["task"]), list(load_corpus()["heldout"]["text"])[:SETTINGS["n_heldout"]]
    rows = {}
    for method, grid in GRIDS.items():
        for steps in STEP_BUDGETS:
            for lr in grid:
                runs = [run_one(method, lr, steps, seed, base=base, tokenizer=tokenizer, task=task, heldout=heldout)
                        for seed in SETTINGS["seeds"]]
                row = rows[f"{method}, {steps} steps, lr {lr:g}"] = {
                    "method": method, "steps": steps, "lr": lr, **{key: [r[key] for r in runs] for key in runs[0]}}
                print(f"{method:>16}, {steps:>3} steps, lr {lr:<6g}: test {statistics.mean(row['test']):.3f}, "
                      f"ranked recall {statistics.mean(row['ranked recall']):.3f}, "
                      f"perplexity {statistics.mean(row['perplexity']):.2f}", flush=True)
    return {"settings": {**SETTINGS, "seeds": list(SETTINGS["seeds"]), "step_budgets": list(STEP_BUDGETS),
                         "notebook_rates": NOTEBOOK_RATES, "ceiling": CEILING},
            "base": knowledge(base, tokenizer, heldout), "rows": rows}


def gentlest_at_ceiling(results: dict, method: str) -> str:
    """The name of `method`'s row with the fewest rate x steps among those whose mean validation
    accuracy reaches the ceiling: that method at matched accuracy, pushed no harder than it needs."""
    reached = [name for name, row in results["rows"].items()
               if row["method"] == method and statistics.mean(row["validation"]) >= results["settings"]["ceiling"]]
    if not reached:
        raise ValueError(f"No {method} row reaches mean validation accuracy {results['settings']['ceiling']}.")
    return min(reached, key=lambda name: results["rows"][name]["lr"] * results["rows"][name]["steps"])


def main() -> None:
    # One thread: the notebook re-runs a row on one thread too, and then gets the stored numbers exactly.
    run_and_save("nb03_forgetting", run, threads=1)


if __name__ == "__main__":
    main()
