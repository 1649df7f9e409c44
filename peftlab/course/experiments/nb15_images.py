"""Notebook 15's comparison: a linear probe, full fine-tuning and LoRA adapting pico-vit-digits (pretrained
on the digits 0-4) to the digits 5-9, and what each does to the old task.

Every method gets the same new head (per seed), batches of 32 from the 537 training images, and a step
budget of 100 (the notebook's) or 300; its learning rate is the one with the best mean validation
accuracy over 5 seeds, from a 3-value grid (grown past
a winning edge: protocol.pick_rate). Reported per seed at that rate: test accuracy on the
digits 5-9, wall time, and the old head's accuracy on the adapted backbone (digits 0-4 test; the base
model scores 0.978). "LoRA + patch conv" also adapts the patch embedding, a Conv2d.

    python -m peftlab.course.experiments.nb15_images          # writes results/nb15_images.json
"""
import statistics

from peftlab.workbook.data.images import load_images
from peftlab.workbook.vision import VISION_MODEL, load_vision_model

from .protocol import pick_rate, run_and_save
from .transfer import NEW_TASK, OLD_TASK, lora_config, run_transfer

SEEDS = (0, 1, 2, 3, 4)
BATCH_SIZE = 32


# name: (method, LoRA config (a function), learning rates, step budgets)
METHODS = {
    "linear probe": ("probe", None, (3e-1, 1.0, 3.0), (100, 300)),
    "LoRA": ("lora", lora_config, (1e-2, 3e-2, 1e-1), (100, 300)),
    "full fine-tuning": ("full", None, (1e-3, 3e-3, 1e-2), (100, 300)),
    "LoRA + patch conv": ("lora", lambda: lora_config(patch_conv=True), (3e-3, 1e-2, 3e-2), (100,)),
}


def summary(values: list[float]) -> dict:
    return {"mean": round(statistics.mean(values), 4), "min": min(values), "max": max(values)}


def compare(base, new_task, old_task) -> dict:
    rows = {}
    for name, (method, config, lrs, budgets) in METHODS.items():
        for steps in budgets:
            best, runs = pick_rate(lrs, lambda lr, method=method, steps=steps, config=config: [
                run_transfer(base, method, lr, seed, new_task=new_task, old_task=old_task, steps=steps,
                             batch_size=BATCH_SIZE, config=config() if config else None) for seed in SEEDS])
            chosen = runs[best]
            row = rows[f"{name}, {steps} steps"] = {
                "method": method, "steps": steps, "lr": best, "trainable": chosen[0]["trainable"],
                "test": [r["test"] for r in chosen], "test_summary": summary([r["test"] for r in chosen]),
                "old_head_on_adapted": [r["old_head_on_adapted"] for r in chosen],
                "old_summary": summary([r["old_head_on_adapted"] for r in chosen]),
                "seconds": [r["seconds"] for r in chosen],
                "validation_by_lr": {str(lr): [r["validation"] for r in runs[lr]] for lr in runs}}
            print(f"{name:>18}, {steps} steps: lr {best:g}, test {row['test_summary']}, "
                  f"old head {row['old_summary']}, {row['trainable']:,} trainable", flush=True)
    return {"settings": {"base_model": VISION_MODEL, "new_task": NEW_TASK, "old_task": OLD_TASK,
                         "batch_size": BATCH_SIZE, "seeds": list(SEEDS), "n_train": len(new_task["train"]),
                         "n_test": len(new_task["test"]), "n_old_test": len(old_task["test"])},
            "rows": rows}


def main() -> None:
    run_and_save("nb15_images", lambda: compare(load_vision_model(), load_images(NEW_TASK), load_images(OLD_TASK)),
                 threads=1)


if __name__ == "__main__":
    main()
