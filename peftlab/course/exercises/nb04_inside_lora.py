"""Checkers for 04_inside_lora."""
import math

import torch

from .checking import Verdict, attempted, call_stub, judge_prediction, report


def check_scales(lora_scale, rslora_scale, r: int = 16, alpha: float = 32) -> Verdict:
    """🌱 The factor s in W + s B A for r=16, lora_alpha=32: plain LoRA and rsLoRA."""
    if not attempted(lora_scale) or not attempted(rslora_scale):
        return report("LoRA and rsLoRA scales", None)
    try:
        lora_scale, rslora_scale = float(lora_scale), float(rslora_scale)
    except (TypeError, ValueError):
        return report("LoRA and rsLoRA scales", False, "write two numbers.")
    lora, rs = alpha / r, alpha / math.sqrt(r)
    close = lambda a, b: math.isclose(a, b, rel_tol=1e-6)
    if close(lora_scale, lora) and close(rslora_scale, rs):
        return report("LoRA and rsLoRA scales", True, f"alpha / r = {lora:g} and alpha / sqrt(r) = {rs:g}: "
                      f"at r = {r} the rsLoRA update is {rs / lora:g}x larger.")
    if close(lora_scale, rs) and close(rslora_scale, lora):
        return report("LoRA and rsLoRA scales", False, "the two are swapped: plain LoRA divides lora_alpha "
                      "by r, rsLoRA by sqrt(r).")
    hints = []
    if not close(lora_scale, lora):
        hints.append(f"plain LoRA: {lora_scale:g} is not lora_alpha / r")
    if not close(rslora_scale, rs):
        hints.append(f"rsLoRA: {rslora_scale:g} is not lora_alpha / sqrt(r)")
    return report("LoRA and rsLoRA scales", False, "; ".join(hints) + f" (r = {r}, lora_alpha = {alpha:g}).")


def _rank_for_energy(values: torch.Tensor, fraction: float, square: bool = True, sort: bool = True,
                     strict: bool = False) -> int:
    """The reference answer (defaults), or one of the usual slips (for the hints)."""
    values = values.double()
    if sort:
        values = values.sort(descending=True).values
    if square:
        values = values ** 2
    share = values.cumsum(0) / values.sum()
    short = share <= fraction + 1e-12 if strict else share < fraction - 1e-12
    return int(short.sum()) + 1


ENERGY_CASES = [   # (singular values, fraction) -> answer
    (torch.tensor([3.0, 1.0, 1.0, 1.0]), 0.5),       # 9 / 12 = 0.75 -> 1
    (torch.tensor([3.0, 1.0, 1.0, 1.0]), 0.9),       # 9, 10, 11 of 12 -> 3
    (torch.tensor([1.0, 1.0, 1.0, 1.0]), 0.5),       # exactly half at k = 2 -> 2
    (torch.tensor([1.0, 2.0, 4.0]), 0.9),            # unsorted input: 16 / 21 < 0.9 -> 2
    (torch.tensor([5.0, 0.0, 0.0]), 1.0),            # everything in the first -> 1
]
SLIPS = [   # (keyword arguments of the slip, hint)
    (dict(sort=False), "Sort the singular values in decreasing order first."),
    (dict(square=False), "Energy is the sum of *squared* singular values (the squared Frobenius norm)."),
    (dict(strict=True), "A share exactly equal to `fraction` is enough (use >=, not >)."),
]


def check_rank_for_energy(fn) -> Verdict:
    """🌿 The smallest k whose top-k singular values hold `fraction` of the energy sum(s_i^2)."""
    for values, fraction in ENERGY_CASES:
        answer = call_stub(fn, values.clone(), fraction)
        if not attempted(answer):
            return report("rank for energy", None)
        try:
            answer = int(answer)
        except (TypeError, ValueError):
            return report("rank for energy", False, f"return an int, not {type(answer).__name__}.")
        truth = _rank_for_energy(values, fraction)
        if answer == truth:
            continue
        hint = next((h for kw, h in SLIPS if answer == _rank_for_energy(values, fraction, **kw)), "")
        if not hint and answer == truth - 1:
            hint = "Off by one: k counts singular values, so when the first one suffices, k = 1."
        return report("rank for energy", False, f"for singular values {values.tolist()} and fraction "
                      f"{fraction}, expected {truth}, got {answer}. {hint}".rstrip())
    return report("rank for energy", True, f"all {len(ENERGY_CASES)} cases right.")


ENERGY_BUCKETS = ("1-4", "5-16", "17-64", "65-128")


def _bucket(k: int) -> str:
    return next(b for b in ENERGY_BUCKETS if k <= int(b.split("-")[1]))


def check_energy_prediction(prediction, measured, singular_values) -> Verdict:
    """🌿 (predict, then measure) How many of full fine-tuning's 128 directions hold 99% of its update's energy?
    The checker recounts from the singular values themselves: the measurement is the run's, not a typed number."""
    name = "99% of full fine-tuning's update"
    if not attempted(prediction) or not attempted(measured):
        return report(name, None)
    if prediction not in ENERGY_BUCKETS:
        return report(name, False, f"predict one of {', '.join(map(repr, ENERGY_BUCKETS))}.")
    truth = _rank_for_energy(torch.as_tensor(singular_values), 0.99)
    if measured != truth:
        return report(name, False, f"these singular values need {truth} directions for 99%, not {measured!r}: measure "
                                   "with rank_for_energy(spectra['full fine-tuning'], 0.99) once it passes its check.")
    four = float((torch.as_tensor(singular_values).double() ** 2).sort(descending=True).values[:4].sum()
                 / (torch.as_tensor(singular_values).double() ** 2).sum())
    lesson = (f"Low rank is a matter of degree: the top 4 directions hold {four:.2f} of the energy, but the last "
              "percent is spread over a long tail that a low-rank adapter cannot represent. Whether the task needs "
              "that tail is what the rank sweep measures, not the spectrum.")
    return judge_prediction(name, prediction, _bucket(truth), f"{truth} of 128 directions hold 99%, so the bucket is",
                            lesson)


def check_pissa_factors(fn, seed: int = 0) -> Verdict:
    """🌳 PiSSA from scratch: A (r, in), B (out, r), residual with s B A = U_r S_r V_r^T."""
    generator = torch.Generator().manual_seed(seed)
    W = torch.randn(12, 10, generator=generator)          # (out, in)
    r, scaling = 3, 2.0
    answer = call_stub(fn, W.clone(), r, scaling)
    if not attempted(answer):
        return report("PiSSA factors", None)
    try:
        A, B, residual = answer
    except (TypeError, ValueError):
        return report("PiSSA factors", False, "return three tensors: (A, B, residual).")
    if tuple(A.shape) != (r, 10) or tuple(B.shape) != (12, r) or tuple(residual.shape) != (12, 10):
        return report("PiSSA factors", False, f"shapes A {tuple(A.shape)}, B {tuple(B.shape)}, residual "
                      f"{tuple(residual.shape)}; expected A (r, in) = ({r}, 10), B (out, r) = (12, {r}), "
                      "residual (12, 10).")
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    principal = U[:, :r] @ torch.diag(S[:r]) @ Vh[:r]
    minor = U[:, -r:] @ torch.diag(S[-r:]) @ Vh[-r:]
    if not torch.allclose(residual + scaling * B @ A, W, atol=1e-4):
        return report("PiSSA factors", False, "residual + scaling * B @ A must equal W: the model's output "
                      "may not change at init.")
    if not torch.allclose(scaling * B @ A, principal, atol=1e-4):
        if torch.allclose(B @ A, principal, atol=1e-4):
            return report("PiSSA factors", False, "B @ A holds U_r S_r V_r^T, so scaling * B @ A is "
                          f"{scaling:g} times too large: divide S_r by the scaling before taking its root.")
        if torch.allclose(scaling * B @ A, minor, atol=1e-4):
            return report("PiSSA factors", False, "the adapter holds the *minor* components (the smallest "
                          "singular values); PiSSA puts the top-r singular triples into B A.")
        return report("PiSSA factors", False, "scaling * B @ A should be U_r diag(S_r) V_r^T, the best "
                      "rank-r approximation of W (torch.linalg.svd, full_matrices=False).")
    if not torch.allclose(B.norm(dim=0), A.norm(dim=1), atol=1e-4):
        return report("PiSSA factors", True, "right, though PiSSA splits the root of S_r / scaling evenly "
                      "between B and A (here their column / row norms differ).")
    return report("PiSSA factors", True, "B A holds the principal part, the residual the rest, and the "
                  "root of S_r / scaling is split evenly between B and A, as in the paper.")
