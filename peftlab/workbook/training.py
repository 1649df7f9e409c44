"""One plain training loop for every method in the workbook.

It trains whatever requires grad (full fine-tuning, LoRA, prompts... the method decides by
freezing the rest), so the loop itself never changes from one notebook to the next:
AdamW over the trainable parameters, linear warmup then cosine or linear decay, gradient
clipping, evaluation every `eval_every` steps, and a `History` of everything that happened.

Two hooks let a method take part without the loop knowing anything about it: `extra_loss()`
is added to the model's loss before the backward pass (a regulariser, such as AdaLoRA's
orthogonality penalty), and `on_step(step)` runs after each optimizer step while the
gradients are still there (a schedule, such as AdaLoRA's rank budget).
"""
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from peftlab.workbook.runtime import pick_device, seed_everything


@dataclass
class History:
    """What happened during training: per-step loss and time, periodic evaluations."""
    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)   # {"step": s, metric: value, ...}
    extra_loss: list[float] = field(default_factory=list)   # extra_loss() per step, when given
    seconds: float = 0.0                              # wall time of the whole run
    eval_seconds: float = 0.0                         # ... of which spent evaluating
    tokens: int = 0                                   # non-padding input tokens seen

    @property
    def seconds_per_step(self) -> float:
        return (self.seconds - self.eval_seconds) / max(len(self.steps), 1)

    def metric(self, name: str) -> tuple[list[int], list[float]]:
        """(steps, values) of one evaluation metric, for plotting."""
        rows = [e for e in self.evals if name in e]
        return [e["step"] for e in rows], [e[name] for e in rows]



def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak learning rate at `step` (0-based)."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(total - warmup, 1)
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"Unknown schedule {schedule!r}; use 'cosine', 'linear' or 'constant'.")


def _batches(data, batch_size: int, collate: Callable, seed: int):
    """Endless shuffled batches (a new order each epoch, reproducible from `seed`)."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield from DataLoader(data, batch_size=batch_size, shuffle=True, collate_fn=collate,
                              generator=generator, drop_last=len(data) >= batch_size)


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def train(model: torch.nn.Module, data: Sequence, collate: Callable, *, steps: int,
          lr: float, batch_size: int = 32, warmup: float | int = 0.05, schedule: str = "cosine",
          weight_decay: float = 0.0, max_grad_norm: float | None = 1.0,
          param_groups: list[dict] | None = None, evaluate: Callable[[], dict] | None = None,
          eval_every: int | None = None, extra_loss: Callable[[], torch.Tensor] | None = None,
          on_step: Callable[[int], None] | None = None, seed: int = 0,
          device: str | torch.device | None = None, progress: bool = True, desc: str = "training") -> History:
    """Train `model` for `steps` optimizer steps and return the History.

    `collate` turns a list of rows into a dict of tensors the model accepts (with `labels`);
    the model must return an object with `.loss` (every `transformers` model does).
    `param_groups` overrides the default single group (used by LoRA+, for instance).
    `evaluate()` returns a dict of metrics; it runs every `eval_every` steps and at the end.
    `extra_loss()` (a scalar tensor) is added to the loss that is backpropagated; History.loss
    keeps the model's own loss and History.extra_loss the added term. `on_step(step)` is
    called after each optimizer step (step = 1, 2, ...), before the gradients are cleared.
    """
    seed_everything(seed)
    device = torch.device(device) if device is not None else pick_device()
    model.to(device)
    groups = param_groups if param_groups is not None else [{"params": trainable_parameters(model)}]
    params = [p for g in groups for p in g["params"]]
    if not params:
        raise ValueError("Nothing to train: no parameter of the model requires grad.")
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    for g in optimizer.param_groups:
        g["peak_lr"] = g["lr"]
    warmup_steps = int(warmup * steps) if isinstance(warmup, float) else warmup

    history, start, batches = History(), time.perf_counter(), _batches(data, batch_size, collate, seed)

    def run_eval(step: int) -> None:
        was_training, t0 = model.training, time.perf_counter()
        model.eval()
        with torch.no_grad():
            history.evals.append({"step": step, **evaluate()})
        model.train(was_training)
        history.eval_seconds += time.perf_counter() - t0

    model.train()
    bar = tqdm(range(steps), desc=desc, disable=not progress, mininterval=0.5)
    for step in bar:
        factor = lr_factor(step, steps, warmup_steps, schedule)
        for g in optimizer.param_groups:
            g["lr"] = g["peak_lr"] * factor
        batch = {k: v.to(device) for k, v in next(batches).items()}
        loss = model(**batch).loss
        total = loss
        if extra_loss is not None:
            added = extra_loss()
            history.extra_loss.append(added.item())
            total = loss + added
        total.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        if on_step is not None:
            on_step(step + 1)
        optimizer.zero_grad(set_to_none=True)

        history.steps.append(step + 1)
        history.loss.append(loss.item())
        history.lr.append(optimizer.param_groups[0]["lr"])
        if "attention_mask" in batch:
            history.tokens += int(batch["attention_mask"].sum())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if evaluate is not None and eval_every and (step + 1) % eval_every == 0 and step + 1 < steps:
            run_eval(step + 1)
    if evaluate is not None:
        run_eval(steps)
    model.eval()
    history.seconds = time.perf_counter() - start
    return history
