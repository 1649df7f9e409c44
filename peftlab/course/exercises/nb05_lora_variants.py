"""Checkers for 05_lora_variants."""
import torch

from peftlab.course.experiments.nb05_variants import METHODS, SETTINGS
from peftlab.course.experiments.protocol import load_results, run_method
from peftlab.workbook.data import load_task

from .checking import Verdict, attempted, call_stub, judge_prediction, report

# pico-llama-1m: 4 layers; q_proj 128 -> 128, v_proj 128 -> 64
LAYERS, Q_OUT, V_OUT, WIDTH = 4, 128, 64, 128


def check_vera_parameters(answer) -> Verdict:
    """🌱 VeRA r=1024 on q_proj and v_proj of pico-llama-1m: trainable numbers."""
    if not attempted(answer):
        return report("VeRA's parameters", None)
    r = 1024
    right = LAYERS * ((r + Q_OUT) + (r + V_OUT))
    if answer == right:
        return report("VeRA's parameters", True, f"{right:,}: r + out per layer (d and b). LoRA r=8 on the same "
                      f"layers trains {LAYERS * 8 * (2 * WIDTH + WIDTH + V_OUT):,} and cannot exceed rank 8.")
    if answer == LAYERS * 2 * r:
        return report("VeRA's parameters", False, "d has r numbers, but b has one per *output* of the layer.")
    if answer == LAYERS * 2 * (r + Q_OUT):
        return report("VeRA's parameters", False, "v_proj has 64 outputs, not 128 (grouped-query attention).")
    return report("VeRA's parameters", False, "per layer: d (r numbers) + b (out numbers), for q and for v, times 4 layers.")


def dora_weight(W, A, B, magnitude, scaling):
    adapted = W + scaling * B @ A
    return magnitude[:, None] * adapted / adapted.norm(dim=1, keepdim=True)


def check_dora_merged_weight(fn) -> Verdict:
    """🌿 dora_merged_weight(W, A, B, magnitude, scaling) -> the (out, in) weight DoRA applies."""
    g = torch.Generator().manual_seed(0)
    W, A, B = torch.randn(6, 5, generator=g), torch.randn(2, 5, generator=g), torch.randn(6, 2, generator=g)
    magnitude = torch.rand(6, generator=g) + 0.5
    answer = call_stub(fn, W, A, B, magnitude, 0.5)
    if not attempted(answer):
        return report("DoRA's merged weight", None)
    answer = torch.as_tensor(answer).detach()
    right = dora_weight(W, A, B, magnitude, 0.5)
    if answer.shape != right.shape:
        return report("DoRA's merged weight", False, f"shape {tuple(answer.shape)}; the weight is (out, in) = (6, 5).")
    if torch.allclose(answer, right, atol=1e-5):
        return report("DoRA's merged weight", True, "m times the row-normalised W + sBA. Merged, DoRA costs nothing at "
                      "inference, like LoRA.")
    by_columns = W + 0.5 * B @ A
    if torch.allclose(answer, magnitude[:, None] * by_columns / by_columns.norm(dim=0, keepdim=True)[:1], atol=1e-5):
        return report("DoRA's merged weight", False, "normalise each output *row* (norm over dim=1).")
    if torch.allclose(answer, dora_weight(W, A, B, magnitude, 1.0), atol=1e-5):
        return report("DoRA's merged weight", False, "the LoRA part is scaled: W + scaling * B @ A.")
    if torch.allclose(answer, W + 0.5 * B @ A, atol=1e-5):
        return report("DoRA's merged weight", False, "that is LoRA's merged weight: now give each row the length m.")
    return report("DoRA's merged weight", False, "adapted = W + s B A; divide each row by its norm; multiply by m.")


def check_full_rank_budget(loha_r, loha_parameters, lora_parameters) -> Verdict:
    """🌳 On a 128 x 128 layer: the smallest LoHa r that can reach rank 128, its parameters, LoRA's for rank 128."""
    if not all(attempted(a) for a in (loha_r, loha_parameters, lora_parameters)):
        return report("full rank for fewer parameters", None)
    side = 128
    right_r = next(r for r in range(1, side + 1) if r * r >= side)          # 12: 144 >= 128
    right = (right_r, 2 * right_r * 2 * side, side * 2 * side)
    if (loha_r, loha_parameters, lora_parameters) == right:
        return report("full rank for fewer parameters", True, f"LoHa r={right[0]} ({right[1]:,} numbers) against "
                      f"LoRA r=128 ({right[2]:,}): {right[2] / right[1]:.1f}x fewer, for a bound on rank; what the "
                      "product can express is another question.")
    if loha_r == 11 or loha_r * loha_r < side:
        return report("full rank for fewer parameters", False, f"rank <= r², and {loha_r}² = {loha_r ** 2} < 128.")
    if loha_r != right_r:
        return report("full rank for fewer parameters", False, "the smallest r with r² >= 128.")
    if loha_parameters == right_r * 2 * side:
        return report("full rank for fewer parameters", False, "LoHa has two pairs of factors: 2 r (in + out).")
    if lora_parameters != right[2]:
        return report("full rank for fewer parameters", False, "LoRA needs r = 128 for rank 128: r (in + out).")
    return report("full rank for fewer parameters", False, "LoHa trains 2 r (in + out) numbers.")


PAIR = ("LoRA r=2", "DoRA r=2")


def dora_against_lora(seed: int = 5, n_test: int = 200) -> dict[str, float]:
    """LoRA r=2 and DoRA r=2 at their stored learning rates on `seed` (not one of the stored five): test accuracy
    on the first `n_test` test reviews, each as the experiment script trains it."""
    rows = load_results("nb05_variants")["rows"]
    test = {"test": list(load_task(SETTINGS["task_name"])["test"])[:n_test]}
    return {name: run_method(METHODS[name], rows[name]["lr"], seed, base_name=SETTINGS["base_name"],
                             task_name=SETTINGS["task_name"], steps=SETTINGS["steps"],
                             batch_size=SETTINGS["batch_size"], eval_rows=test)["test"] for name in PAIR}


def check_dora_sign(prediction, measured, seed: int = 5) -> Verdict:
    """🌿 (predict, then run) On a sixth seed, does DoRA r=2 beat LoRA r=2? The checker runs the pair too."""
    name = f"DoRA against LoRA on seed {seed}"
    if not attempted(prediction) or not attempted(measured):
        return report(name, None)
    if prediction not in ("DoRA", "LoRA", "tie"):
        return report(name, False, "predict 'DoRA', 'LoRA' or 'tie'.")
    runs = dora_against_lora(seed)
    if measured != runs:
        return report(name, False, f"exercises.dora_against_lora(seed={seed}) gives {runs}, not {measured!r}: measure "
                                   "with it (in this notebook's session, so the thread count matches).")
    lora, dora = (runs[n] for n in PAIR)
    found = "DoRA" if dora > lora else "LoRA" if lora > dora else "tie"
    lesson = ("On the five stored seeds DoRA led on four and tied on one, an interval just above zero: a small edge "
              "that repeats. What it is due to is another question: DoRA also trains 768 more numbers (its magnitude "
              "vectors), and a LoRA given as many more is the control this comparison still lacks.")
    return judge_prediction(name, prediction, found, f"LoRA {lora:.3f}, DoRA {dora:.3f}: the winner is", lesson)
