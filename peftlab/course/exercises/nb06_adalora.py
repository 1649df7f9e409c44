"""Checkers for 06_adalora."""
from types import SimpleNamespace

import torch

from peftlab.course.experiments.nb06_allocation import allocate
from peftlab.tuners.adalora_allocator import RankAllocator

from .checking import Verdict, attempted, call_stub, judge_prediction, report

# pico-llama-1m: 4 decoder layers, width 128; v_proj has 64 outputs (2 key/value heads of 32).
LAYERS, WIDTH, V_OUT = 4, 128, 64


def check_adalora_parameter_count(answer) -> Verdict:
    """🌱 Numbers AdaLoRA trains with init_r=12 on q_proj and v_proj of pico-llama-1m."""
    if not attempted(answer):
        return report("AdaLoRA parameter count", None)
    r = 12

    def count(rank, plus_one=True, v_out=V_OUT):
        return LAYERS * sum(rank * (WIDTH + out + plus_one) for out in (WIDTH, v_out))

    right = count(r)
    if answer == right:
        return report("AdaLoRA parameter count", True,
                      f"{right:,}: r (in + out + 1) per layer, P and Q plus one λ per triplet. They all train until "
                      "the end, masked or not.")
    if answer == count(r, plus_one=False):
        return report("AdaLoRA parameter count", False, "that is LoRA's count: each triplet has its λ too, r more per layer.")
    if answer == count(r, v_out=WIDTH):
        return report("AdaLoRA parameter count", False, "v_proj maps 128 to 64 here (grouped keys and values).")
    if answer == count(4):
        return report("AdaLoRA parameter count", False,
                      "masking zeroes λ but keeps P, Q and λ training: count init_r, not target_r.")
    if answer == count(r) // LAYERS:
        return report("AdaLoRA parameter count", False, "that is one decoder layer; the model has 4.")
    return report("AdaLoRA parameter count", False,
                  "per layer: P (out x r) + λ (r) + Q (r x in), for q_proj and v_proj in each of 4 layers.")


SCHEDULES = [   # (init budget, target budget, tinit, tfinal, total_step, deltaT)
    (96, 32, 10, 20, 100, 1),
    (168, 56, 5, 5, 30, 2),
    (12, 4, 0, 0, 7, 1),
]


def _library_budget(b0, bT, tinit, tfinal, total, delta_t, step) -> int:
    config = SimpleNamespace(tinit=tinit, tfinal=tfinal, total_step=total, deltaT=delta_t)
    allocator = SimpleNamespace(config=config, init_budget=b0, target_budget=bT)
    return RankAllocator.budget_schedule(allocator, step)[0]


def _score_case(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"q_proj": torch.rand(6, generator=g), "v_proj": torch.rand(6, generator=g) * 0.5,
            "down_proj": torch.rand(4, generator=g) * 2}


def _expected_mask(scores: dict, budget: int) -> dict[str, list[bool]]:
    ranked = torch.cat(list(scores.values())).sort(descending=True).values
    threshold = ranked[budget - 1]
    return {name: (s >= threshold).tolist() for name, s in scores.items()}


def _shared_evenly(scores: dict, kept: dict, budget: int) -> bool:
    """Each layer kept its own best triplets, about budget / layers of them (a per-layer top-k)."""
    share = budget / len(scores)
    for name, s in scores.items():
        n = sum(kept[name])
        if not share - 1 < n < share + 1 or set(s.argsort(descending=True)[:n].tolist()) != \
                {i for i, k in enumerate(kept[name]) if k}:
            return False
    return True


def check_mask_to_budget(fn) -> Verdict:
    """🌳 mask_to_budget(scores, budget) -> {layer: [kept?] per triplet}, the `budget` best over all layers."""
    for budget in (8, 3, 15):
        scores = _score_case(budget)
        got = call_stub(fn, {k: v.clone() for k, v in scores.items()}, budget)
        if not attempted(got):
            return report("mask to budget", None)
        if not isinstance(got, dict) or set(got) != set(scores):
            return report("mask to budget", False, f"return a dict with one entry per layer: {sorted(scores)}.")
        try:
            kept = {k: [bool(x) for x in got[k]] for k in scores}
        except TypeError:
            return report("mask to budget", False, "each layer's entry should be a list of booleans, one per triplet.")
        if any(len(kept[k]) != len(scores[k]) for k in scores):
            return report("mask to budget", False, "one boolean per triplet of the layer.")
        expected = _expected_mask(scores, budget)
        if kept == expected:
            continue
        total = sum(map(sum, kept.values()))
        lowest = _expected_mask({k: -v for k, v in scores.items()}, budget)
        if kept == lowest:
            hint = "these are the least important triplets: keep the highest scores."
        elif _shared_evenly(scores, kept, budget):
            hint = ("that shares the budget evenly between the layers, which is LoRA's choice; AdaLoRA ranks "
                    "all triplets together, so an important layer can keep more.")
        elif total != budget:
            hint = f"{total} triplets kept for a budget of {budget}."
        else:
            hint = "rank the triplets of all layers together and keep the best `budget` of them."
        return report("mask to budget", False, f"budget {budget}: {hint}")
    return report("mask to budget", True,
                  "one ranking across the model: that is what lets AdaLoRA give one layer more rank than another.")


UPPER_LESSON = ("The five stored seeds put more triplets in layers 2-3 on four and in layers 0-1 on one, and the "
                "interval on the difference includes zero: which layers win changes with the seed, so it is not a "
                "property of AdaLoRA on this task. What held on every seed was attention over the MLP. One seed "
                "would have taught both patterns with the same confidence.")


def check_upper_layers_again(prediction, measured_ranks, llama, tokenizer, task, seed: int = 5) -> Verdict:
    """🌿 Predict, then run: on a seed the stored runs do not have, do layers 2-3 keep more triplets?
    The checker runs the same allocation itself, so the measurement is yours only if it is the real one."""
    name = f"upper layers on seed {seed}"
    if not attempted(prediction) or not attempted(measured_ranks):
        return report(name, None)
    if prediction not in ("upper", "lower", "tie"):
        return report(name, False, "predict 'upper', 'lower' or 'tie'.")
    _, ranks, _ = allocate(llama, tokenizer, task, seed)
    if [[int(r) for r in row] for row in measured_ranks] != ranks:
        return report(name, False, f"measured_ranks is not what allocate(llama, tokenizer, task, seed={seed})[1] "
                                   "gives: run it as the comment says (one thread, as the notebook set up).")
    upper, lower = sum(map(sum, ranks[LAYERS // 2:])), sum(map(sum, ranks[:LAYERS // 2]))
    found = "upper" if upper > lower else "lower" if lower > upper else "tie"
    return judge_prediction(name, prediction, found,
                            f"on seed {seed} layers 2-3 keep {upper} triplets and layers 0-1 keep {lower}", UPPER_LESSON)
