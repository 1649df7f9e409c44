"""Where AdaLoRA puts its rank, seed by seed: notebook 06's allocation run (120 steps, every linear
layer of pico-llama-1m starting at rank 6 and cut to 2 per layer on average) repeated on five seeds,
so that a pattern the notebook shows on seed 0 is called a finding only if the other seeds show it
too (Zhang et al. 2023 report more budget for the top layers and for the feed-forward matrices).

    python -m peftlab.course.experiments.nb06_allocation   # writes results/nb06_allocation.json
"""
import copy

import torch

from peftlab import AdaLoraConfig, get_peft_model
from peftlab.workbook import PromptTargetCollator, load_base_model, load_task, train
from peftlab.workbook.data import LABEL_WORDS
from peftlab.workbook.evaluate import label_accuracy

from .nb06_adalora import TARGETS
from .protocol import run_and_save

# The notebook's run: its warm-up and final phases are a sixth of the steps each.
SETTINGS = dict(steps=120, tinit=20, tfinal=20, delta_t=2, init_r=6, target_r=2, lr=3e-2, batch_size=16,
                seeds=(0, 1, 2, 3, 4), n_validation=200)
N_LAYERS = 4


def allocation_config() -> AdaLoraConfig:
    s = SETTINGS
    return AdaLoraConfig(init_r=s["init_r"], target_r=s["target_r"], lora_alpha=2 * s["init_r"],
                         target_modules=TARGETS, total_step=s["steps"], tinit=s["tinit"], tfinal=s["tfinal"],
                         deltaT=s["delta_t"])


def kept_ranks(pattern: dict | None, init_r: int) -> list[list[int]]:
    """(layer, module) table of the triplets a rank_pattern keeps; modules in TARGETS' order."""
    ranks = [[init_r] * len(TARGETS) for _ in range(N_LAYERS)]
    for key, keep in (pattern or {}).items():
        parts = key.split(".")
        ranks[int(parts[2])][TARGETS.index(parts[-2])] = sum(keep)
    return ranks


def allocate(llama, tokenizer, task, seed: int, on_step=None) -> tuple:
    """(model, kept ranks, validation accuracy) of one allocation run; `on_step(model, step)` is
    called after each allocation (the notebook records snapshots with it)."""
    torch.manual_seed(seed)
    model = get_peft_model(copy.deepcopy(llama), allocation_config())

    def step(i):
        model.base_model.update_and_allocate(i)
        if on_step is not None:
            on_step(model, i)

    train(model, task["train"], PromptTargetCollator(tokenizer), steps=SETTINGS["steps"], lr=SETTINGS["lr"],
          batch_size=SETTINGS["batch_size"], seed=seed, on_step=step, progress=False)
    final = kept_ranks(model.peft_config["default"].rank_pattern, SETTINGS["init_r"])
    accuracy = label_accuracy(model, tokenizer, list(task["validation"])[:SETTINGS["n_validation"]], LABEL_WORDS)
    return model, final, accuracy


def run() -> dict:
    llama, tokenizer = load_base_model()
    llama.requires_grad_(False)
    task = load_task("sentiment")
    runs = {}
    for seed in SETTINGS["seeds"]:
        _, final, accuracy = allocate(llama, tokenizer, task, seed)
        runs[str(seed)] = {"kept_ranks": final, "validation": accuracy}
        print(f"seed {seed}: {final} validation {accuracy:.3f}", flush=True)
    return {"settings": {**SETTINGS, "targets": TARGETS, "base_model": "pico-llama-1m", "task": "sentiment"},
            "runs": runs}


def main(threads: int = 1) -> None:
    run_and_save("nb06_allocation", run, threads)


if __name__ == "__main__":
    main()
