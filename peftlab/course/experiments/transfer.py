"""Three ways to adapt a pretrained image classifier to classes it never saw (notebook 15).

The transfer-learning picture that PEFT starts from (Yosinski et al. 2014, arXiv:1411.1792;
Kornblith et al. 2019, arXiv:1805.08974): a network pretrained on one set of classes is reused
for another, with a new head, in one of three ways:

- "probe" (a linear probe): only the new head trains; the backbone is frozen features;
- "full" (full fine-tuning): the new head and every weight of the backbone train;
- "lora": the new head trains in full (`modules_to_save`) and the backbone gets LoRA adapters
  (Hu et al. 2021, arXiv:2106.09685); the pretrained weights stay frozen.

All three start from the same new head (same seed), train with the same loop, batches and step
budget, and are scored the same way. Forgetting is measured by putting the *old* head (digits 0-4)
back on the adapted backbone: how well do the features still serve the task they were learned for?
"""
import copy
import time

import torch
from torch import nn

from peftlab.model import get_peft_model
from peftlab.tuners.lora import LoraConfig
from peftlab.workbook.data.images import IMAGE_TASKS
from peftlab.workbook.memory import parameter_counts
from peftlab.workbook.training import train
from peftlab.workbook.vision import collate_images, head_accuracy, image_accuracy

METHODS = ("probe", "full", "lora")
NEW_TASK, OLD_TASK = "digits_5_9", "digits_0_4"


def lora_config(patch_conv: bool = False) -> LoraConfig:
    """LoRA r=4 on every layer's query and value projections (Hu et al.'s choice), with `patch_conv`
    also on the patch embedding (a Conv2d); the new head trains in full."""
    targets = ["q_proj", "v_proj"] + (["projection"] if patch_conv else [])
    return LoraConfig(r=4, lora_alpha=8, target_modules=targets, modules_to_save=["classifier"])


def new_head(base, seed: int, num_labels: int = 5) -> nn.Linear:
    """A freshly initialised linear head (nn.Linear's init), the same for every method at one seed."""
    torch.manual_seed(10_000 + seed)
    return nn.Linear(base.config.hidden_size, num_labels)


def transfer_model(base, method: str, seed: int, config: LoraConfig | None = None):
    """A copy of `base` ready to train on the new classes by `method` (the base is never changed)."""
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose one of {', '.join(METHODS)}.")
    model, head = copy.deepcopy(base), new_head(base, seed)
    labels = [str(d) for d in IMAGE_TASKS[NEW_TASK]]
    model.config.id2label, model.config.label2id = dict(enumerate(labels)), {k: i for i, k in enumerate(labels)}
    if method == "lora":
        model = get_peft_model(model, config or lora_config())
        # modules_to_save starts the trained copy from the old head; give it the new head instead.
        model.get_base_model().classifier.modules_to_save["default"].load_state_dict(head.state_dict())
        return model
    model.classifier = head
    if method == "probe":
        for name, param in model.named_parameters():
            param.requires_grad = name.startswith("classifier.")
    return model


def run_transfer(base, method: str, lr: float, seed: int, *, new_task, old_task, steps: int,
                 batch_size: int = 32, n_train: int | None = None, config: LoraConfig | None = None,
                 eval_splits: tuple[str, ...] = ("validation", "test"), keep_model: bool = False) -> dict:
    """Train one method once on the new task; return trainable parameters, wall time, new-task accuracy
    on `eval_splits`, and the old head's accuracy on the adapted backbone (old task's test split).
    `n_train` keeps only the first n training images (the splits are shuffled per class). Runs on the CPU
    even where a GPU is present: a 136k-parameter model gains nothing from it, and on the CPU the stored
    seeds of results/nb15_images.json come out again exactly."""
    model = transfer_model(base, method, seed, config)
    rows = list(new_task["train"])[:n_train]
    start = time.perf_counter()
    train(model, rows, collate_images, steps=steps, lr=lr, batch_size=batch_size, seed=seed, progress=False,
          device="cpu")
    seconds = time.perf_counter() - start
    result = {"method": method, "lr": lr, "seed": seed, "trainable": parameter_counts(model)["trainable"],
              "seconds": round(seconds, 2),
              **{split: round(image_accuracy(model, new_task[split]), 4) for split in eval_splits},
              "old_head_on_adapted": round(head_accuracy(model, base.classifier, old_task["test"]), 4)}
    return {**result, "model": model} if keep_model else result
