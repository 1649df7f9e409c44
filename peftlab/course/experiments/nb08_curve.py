"""Notebook 08's prompt of 8 virtual tokens, step by step: its test accuracy every 10 steps up to 150, at
three learning rates, 3 seeds. Notebook 08 (100 steps, its rate chosen on validation) and notebook 12
(40 steps, its own rate) report the same P = 8 prompt on the same task at different levels; the curve
shows how the step budget and the rate between them decide where a run stands.

pico-llama-1m, sentiment, batches of 16, prompt tuning with P = 8 (random start), label accuracy on
200 test reviews, one thread.

    python -m peftlab.course.experiments.nb08_curve          # writes results/nb08_curve.json
"""
import torch

from peftlab.model import get_peft_model
from peftlab.tuners import PromptTuningConfig
from peftlab.workbook.batching import PromptTargetCollator
from peftlab.workbook.data import LABEL_WORDS, load_task
from peftlab.workbook.evaluate import label_accuracy
from peftlab.workbook.training import train
from peftlab.workbook.zoo import load_base_model

from .protocol import run_and_save

SETTINGS = dict(base_model="pico-llama-1m", task="sentiment", P=8, steps=150, every=10, batch_size=16,
                seeds=(0, 1, 2), lrs=(0.1, 1.0, 10.0), n_test=200)


def curve(lr: float, seed: int) -> list[float]:
    """Test accuracy after every `every` steps of one run."""
    base, tokenizer = load_base_model(SETTINGS["base_model"])
    task = load_task(SETTINGS["task"])
    test = list(task["test"])[:SETTINGS["n_test"]]
    torch.manual_seed(seed)
    model = get_peft_model(base, PromptTuningConfig(num_virtual_tokens=SETTINGS["P"]))
    points: list[float] = []

    def on_step(step: int) -> None:
        if step % SETTINGS["every"] == 0:
            points.append(round(label_accuracy(model, tokenizer, test, LABEL_WORDS), 4))
            model.train()   # the evaluation switched it to eval mode
    train(model, task["train"], PromptTargetCollator(tokenizer), steps=SETTINGS["steps"], lr=lr,
          batch_size=SETTINGS["batch_size"], seed=seed, progress=False, on_step=on_step)
    return points


def run() -> dict:
    curves = {str(lr): {str(seed): curve(lr, seed) for seed in SETTINGS["seeds"]} for lr in SETTINGS["lrs"]}
    for lr, runs in curves.items():
        print(f"lr {lr}: " + "; ".join(f"seed {s}: {c[3]:.3f} at 40, {c[9]:.3f} at 100" for s, c in runs.items()),
              flush=True)
    return {"settings": {**SETTINGS, "seeds": list(SETTINGS["seeds"]), "lrs": list(SETTINGS["lrs"])},
            "steps": list(range(SETTINGS["every"], SETTINGS["steps"] + 1, SETTINGS["every"])), "curves": curves}


def main() -> None:
    run_and_save("nb08_curve", run, threads=1)


if __name__ == "__main__":
    main()
