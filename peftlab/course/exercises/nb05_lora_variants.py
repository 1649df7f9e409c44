"""Checkers for 05_lora_variants."""

from peftlab.course.experiments.nb05_variants import METHODS, SETTINGS
from peftlab.course.experiments.protocol import load_results, run_stored_rows
from peftlab.workbook.stats import compare

from .checking import Verdict, attempted, judge_prediction, report

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


FULL_RANK = {"LoRA": 128 * (128 + 128),                       # r = 128: r (in + out)
             "LoHa": 2 * 12 * (128 + 128),                     # r = 12, the smallest with r² >= 128
             "LoKr": 8 * 8 + 16 * 16}                          # W1 8 x 8 and W2 16 x 16, both full: 8 · 16 = 128


def check_full_rank_budget(method, parameters) -> Verdict:
    """🌳 Decide: which of LoRA, LoHa and LoKr reaches rank 128 on a 128 x 128 layer with the fewest
    trained numbers, and how many?"""
    title = "full rank for fewer parameters"
    if not (attempted(method) and attempted(parameters)):
        return report(title, None)
    if method not in FULL_RANK:
        return report(title, False, f"choose one of {sorted(FULL_RANK)}.")
    best = min(FULL_RANK, key=FULL_RANK.get)
    table = ", ".join(f"{m} {n:,}" for m, n in FULL_RANK.items())
    if method == best and parameters == FULL_RANK[best]:
        return report(title, True, f"{table}: LoKr's Kronecker product reaches rank 8 · 16 = 128 from 320 numbers, "
                      "100x fewer than LoRA. But rank is a bound, not expressiveness: W1 ⊗ W2 repeats one 16 x 16 "
                      "pattern in every block, scaled, so it reaches full rank with a very particular structure "
                      "(Step 5 measures what that buys on the task).")
    if method == best:
        return report(title, False, "LoKr, yes; count again: W1 and W2 full, with rank(W1) · rank(W2) = 128 "
                      "and the fewest entries (their sides multiply to 128 each way).")
    if method == "LoHa":
        return report(title, False, "LoHa needs r = 12 (r² >= 128) and trains 2 r (in + out) = 6,144: fewer than "
                      "LoRA, but look at LoKr in Step 4's plot.")
    return report(title, False, "LoRA needs r = 128 for rank 128: r (in + out) = 32,768, the most of the three.")


PAIR = ("LoRA r=2", "DoRA r=2")


def dora_against_lora(seed: int = 5, n_test: int = 200) -> dict[str, float]:
    """LoRA r=2 and DoRA r=2 at their stored learning rates on `seed` (not one of the stored five): test accuracy
    on the first `n_test` test reviews, each as the experiment script trains it."""
    return run_stored_rows("nb05_variants", METHODS, {name: name for name in PAIR}, seed, n_test=n_test,
                           **{k: SETTINGS[k] for k in ("base_name", "task_name", "steps", "batch_size")})


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
    stored = load_results("nb05_variants")["rows"]
    verdict = compare(stored["DoRA r=2"]["test"], stored["LoRA r=2"]["test"], names=("DoRA", "LoRA"))
    lesson = (f"On the five stored seeds DoRA led on {verdict.wins_a}; the interval, {verdict.low:+.3f} to "
              f"{verdict.high:+.3f}, says {verdict.verdict}. One more seed moves that interval a little; it cannot "
              "settle the question on its own. And a real edge would still need its control: DoRA trains 768 more "
              "numbers (its magnitude vectors) than the LoRA it is compared with.")
    return judge_prediction(name, prediction, found, f"LoRA {lora:.3f}, DoRA {dora:.3f}: the winner is", lesson)
