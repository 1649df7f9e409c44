"""Checkers for 02_lora_from_scratch."""
from types import SimpleNamespace

import torch
from torch import nn

from peftlab.model import get_peft_model
from peftlab.tuners import LoraConfig
from peftlab.workbook.batching import PromptTargetCollator
from peftlab.workbook.data import LABEL_WORDS, load_task
from peftlab.workbook.evaluate import fact_recall_by_rank, label_accuracy
from peftlab.workbook.training import train
from peftlab.workbook.zoo import load_base_model

from .checking import Verdict, attempted, call_stub, report

TOLERANCE = 0.01            # "fits": relative Frobenius error below 1%
TARGET_CHOICES = ("q,v", "all-linear")
TARGET_MODULES = {"q,v": ["q_proj", "v_proj"], "all-linear": "all-linear"}


def check_lora_parameter_count(answer) -> Verdict:
    """🌱 r * (d_in + d_out) for a 4096 x 4096 matrix at r = 8."""
    if not attempted(answer):
        return report("LoRA parameter count", None)
    truth = 8 * (4096 + 4096)
    if answer == truth:
        return report("LoRA parameter count", True, f"{truth:,} = {truth / 4096**2:.2%} of the matrix's {4096**2:,}.")
    if answer == 8 * 4096:
        return report("LoRA parameter count", False, "that is A alone (r x d_in); B (d_out x r) trains too.")
    return report("LoRA parameter count", False, "A is r x d_in and B is d_out x r.")


def best_errors(target: torch.Tensor) -> dict[int, float]:
    """Eckart-Young: the smallest relative error any rank-r matrix reaches, for every r up to the rank."""
    target = target.detach()
    sigma = torch.linalg.svdvals(target)
    rank = int(torch.linalg.matrix_rank(target))          # singular values above float rounding
    return {r: float(sigma[r:].norm() / sigma.norm()) for r in range(1, rank + 1)}


def check_smallest_rank(prediction, errors, target) -> Verdict:
    """🌿 The smallest r whose trained LoRA update is within 1% of `target`; predicted, then trained."""
    title = "the smallest rank that fits"
    if not (attempted(prediction) and attempted(errors)):
        return report(title, None)
    if not isinstance(prediction, int) or prediction < 1:
        return report(title, False, "predict a rank: a whole number, 1 or more.")
    if not isinstance(errors, dict) or not errors or any(not isinstance(r, int) or r < 1 for r in errors):
        return report(title, False, "measure a dict {r: relative error of the trained update}, one entry per rank r.")
    best = best_errors(target)
    below_best = [r for r, e in errors.items() if e < best.get(r, 0.0) - 1e-3]
    if below_best:
        return report(title, False, f"at r = {below_best[0]} you measured {errors[below_best[0]]:.4f}, below "
                      f"{best[below_best[0]]:.4f}, the best any rank-{below_best[0]} matrix can do: measure "
                      "|learned - target| / |target| against this target.")
    fitting = sorted(r for r, e in errors.items() if e < TOLERANCE)
    if not fitting:
        return report(title, False, f"no rank you trained got under {TOLERANCE:.0%}; train larger ones too.")
    found = fitting[0]
    missing = [r for r in range(1, found) if r not in errors]
    if missing:
        return report(title, False, f"r = {found} fits, but you did not train r = {missing}: train every rank "
                      f"from 1 up to know it is the smallest.")
    rank = max(best)
    table = ", ".join(f"r={r}: {errors[r]:.2%} (best {best[r]:.2%})" for r in sorted(errors) if r in best)
    lesson = (f"The target has rank {rank}, and the best rank-r error (Eckart-Young) is the norm of the "
              f"singular values left out, over the norm of all of them. Measured: {table}. At r = {found} "
              f"training reached {errors[found]:.2%}, against {best.get(found, 0.0):.2%} for the best rank-{found} "
              "matrix; "
              + (f"a direction carrying less than {TOLERANCE:.0%} of the norm needs no rank of its own."
                 if found < rank else "every direction of the target carries more than 1% of its norm."))
    if prediction != found:
        return report(title, False, f"the smallest r under {TOLERANCE:.0%} is {found}, not {prediction}. {lesson}")
    return report(title, True, f"r = {found}. {lesson}")


def _example_layer(seed: int = 0):
    """An object shaped like the notebook's LinearWithLoRA (linear, lora.A, lora.B, lora.scale)."""
    g = torch.Generator().manual_seed(seed)
    linear = nn.Linear(12, 10)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(10, 12, generator=g))
        linear.bias.copy_(torch.randn(10, generator=g))
    lora = SimpleNamespace(A=torch.randn(3, 12, generator=g), B=torch.randn(10, 3, generator=g), scale=2.0)
    return SimpleNamespace(linear=linear, lora=lora)


def check_lora_forward(fn) -> Verdict:
    """🌿 x W0^T + b + scale * (x A^T) B^T, for any leading shape, without forming B A."""
    layer = _example_layer(1)
    x = torch.randn(2, 5, 12, generator=torch.Generator().manual_seed(2))
    W0, bias, A, B, scale = layer.linear.weight.detach(), layer.linear.bias.detach(), layer.lora.A, layer.lora.B, layer.lora.scale
    formed = []
    original_matmul = torch.Tensor.__matmul__

    def spy(a, b):   # record every product shaped like B @ A: (d_out, r) @ (r, d_in)
        if a.dim() == 2 and b.dim() == 2 and a.shape == B.shape and b.shape == A.shape:
            formed.append(True)
        return original_matmul(a, b)

    torch.Tensor.__matmul__ = spy
    try:
        result = call_stub(fn, x, W0, bias, A, B, scale)
    finally:
        torch.Tensor.__matmul__ = original_matmul
    if not attempted(result):
        return report("LoRA forward", None)
    expected = x @ W0.T + bias + scale * (x @ A.T) @ B.T
    if result.shape != expected.shape:
        return report("LoRA forward", False, f"shape {tuple(result.shape)}, expected {tuple(expected.shape)}.")
    if not torch.allclose(result, expected, atol=1e-4):
        return report("LoRA forward", False, "wrong values: h = x W0^T + b + scale * (x A^T) B^T.")
    if formed:
        return report("LoRA forward", False, "right values, but you formed B @ A: multiply x by A^T first.")
    return report("LoRA forward", True, "and B @ A was never formed.")


def lora_run(targets: str, steps: int = 40, seed: int = 0) -> dict:
    """LoRA r=4, alpha=8 on `targets` ("q,v" or "all-linear") of a fresh base model, trained on sentiment
    for `steps` steps (batch 32, learning rate 3e-3, the recipe of notebook 03). Returns the trainable
    parameter count, validation accuracy (first 200 rows) and fact recall by ranking (106 countries)."""
    if targets not in TARGET_MODULES:
        raise ValueError(f"targets must be one of {TARGET_CHOICES}, not {targets!r}.")
    base, tokenizer = load_base_model()
    task = load_task("sentiment")
    torch.manual_seed(seed)                               # the same A at initialisation, every run
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=TARGET_MODULES[targets]))
    history = train(model, task["train"], PromptTargetCollator(tokenizer), steps=steps, lr=3e-3, batch_size=32,
                    warmup=0.1, seed=seed, progress=False)
    return {"targets": targets, "steps": steps, "trainable": model.get_nb_trainable_parameters()[0],
            "final_loss": history.loss[-1],
            "accuracy": label_accuracy(model, tokenizer, task["validation"].select(range(200)), LABEL_WORDS),
            "recall": fact_recall_by_rank(model, tokenizer)}


def check_target_modules(prediction, runs) -> Verdict:
    """🌳 LoRA on q,v or on every linear layer: which learns more in 40 steps, and which keeps more facts?"""
    title = "q,v or all-linear?"
    if not (isinstance(prediction, dict) and all(attempted(p) for p in prediction.values()) and prediction
            and attempted(runs)):
        return report(title, None)
    if set(prediction) != {"accuracy", "recall"} or any(p not in TARGET_CHOICES for p in prediction.values()):
        return report(title, False, f"predict {{'accuracy': ..., 'recall': ...}}, each one of {TARGET_CHOICES}.")
    if not isinstance(runs, dict) or set(runs) != set(TARGET_CHOICES) \
            or any(not isinstance(run, dict) or run.get("targets") != name for name, run in runs.items()):
        return report(title, False, "run both: {'q,v': exercises.lora_run('q,v'), "
                      "'all-linear': exercises.lora_run('all-linear')}.")
    if runs["q,v"]["steps"] != runs["all-linear"]["steps"]:
        return report(title, False, "train both for the same number of steps, or the comparison says nothing.")
    qv, every = runs["q,v"], runs["all-linear"]
    measured = {key: ("all-linear" if every[key] > qv[key] else "q,v" if qv[key] > every[key] else "tie")
                for key in ("accuracy", "recall")}
    summary = (f"after {qv['steps']} steps: q,v ({qv['trainable']:,} trained) accuracy {qv['accuracy']:.3f}, "
               f"recall {qv['recall']:.3f}; all-linear ({every['trainable']:,}) accuracy {every['accuracy']:.3f}, "
               f"recall {every['recall']:.3f}")
    notes = []
    if measured["accuracy"] == "all-linear":
        notes.append("Here more adapted matrices learned faster, at one learning rate and 40 steps"
                     + (f" (LoRA on q,v is still at chance, {qv['accuracy']:.3f}: it has not started to learn at this "
                        "rate and budget)" if qv["accuracy"] <= 0.55 else "") + ". Dettmers et al. (QLoRA, 2023, "
                     "arXiv:2305.14314) made a different claim, about final quality: LoRA on every linear layer was "
                     "needed to match 16-bit full fine-tuning.")
    if measured["recall"] == "all-linear":
        notes.append(f"Fewer trained numbers did not mean less forgetting: the q,v adapter ended at a loss of "
                     f"{qv['final_loss']:.2f} (all-linear {every['final_loss']:.3f}), so it had changed the model "
                     "without learning the task yet.")
    elif measured["recall"] == "q,v":
        notes.append("Here the smaller adapter changed less of what the model knew.")
    notes.append("One budget and one learning rate: measure before you generalise.")
    wrong = [key for key in ("accuracy", "recall") if prediction[key] != measured[key]]
    if wrong:
        return report(title, False, f"{summary}. Your prediction was off for {wrong}. " + " ".join(notes))
    return report(title, True, f"{summary}. " + " ".join(notes))
