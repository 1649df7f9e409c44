"""Checkers for 07_adapters_ia3_bitfit."""
import copy

import torch

from peftlab import LoraConfig, get_peft_model
from peftlab.tuners.targeting import is_norm
from peftlab.workbook.inference_cost import forward_operations

from .checking import Verdict, attempted, call_stub, judge_prediction, report


def check_houlsby_parameter_count(answer) -> Verdict:
    """🌱 Trained numbers of Houlsby adapters (after attention and after the feed-forward block,
    reduction factor 16) in a BERT-base-shaped model: 12 layers, width 768."""
    if not attempted(answer):
        return report("Houlsby parameter count", None)
    layers, d, m = 12, 768, 768 // 16
    one = 2 * d * m + m + d                     # down (m x d) + its bias, up (d x m) + its bias
    right = layers * 2 * one
    if answer == right:
        return report("Houlsby parameter count", True,
                      f"{right:,}: about {right / 110e6:.1%} of BERT-base's 110M, and the adapters stay at inference.")
    if answer == layers * 2 * 2 * d * m:
        return report("Houlsby parameter count", False, "the two small layers have biases too: m + d per adapter.")
    if answer == layers * one:
        return report("Houlsby parameter count", False, "that is one adapter per layer (Pfeiffer); Houlsby puts two.")
    if answer == layers * 2 * (2 * d * 16 + 16 + d):
        return report("Houlsby parameter count", False, "the reduction factor divides the width: m = 768 / 16 = 48.")
    return report("Houlsby parameter count", False,
                  "per adapter: down (m x d) + m + up (d x m) + d with m = d / 16; two adapters per layer.")


def _ia3_case(feedforward: bool):
    # square on purpose: rows and columns, bias scaled or not, all give answers of the right shape
    g = torch.Generator().manual_seed(3 if feedforward else 4)
    W, b = torch.randn(4, 4, generator=g), torch.randn(4, generator=g)
    return W, b, torch.rand(4, generator=g) + 0.5


def check_train_only(fn, model) -> Verdict:
    """🌳 train_only(model, kind) freezes everything but the bias terms ("bias") or the
    normalisation layers' parameters ("norm"), and returns the number of trainable parameters."""
    counts = {}
    for kind in ("bias", "norm"):
        candidate = copy.deepcopy(model)
        counts[kind] = call_stub(fn, candidate, kind)
        if not attempted(counts[kind]):
            return report("train only", None)
        norms = {f"{n}." for n, m in model.named_modules() if is_norm(m)}
        expected = {n for n, _ in model.named_parameters()
                    if (n.endswith(".bias") if kind == "bias" else any(n.startswith(p) for p in norms))}
        got = {n for n, p in candidate.named_parameters() if p.requires_grad}
        if got != expected:
            extra, missing = sorted(got - expected)[:2], sorted(expected - got)[:2]
            return report("train only", False, f"kind {kind!r}: {'also trains ' + str(extra) if extra else ''}"
                          f"{' and ' if extra and missing else ''}{'misses ' + str(missing) if missing else ''}.")
        if counts[kind] != sum(p.numel() for p in candidate.parameters() if p.requires_grad):
            return report("train only", False, f"kind {kind!r}: return the number of trainable parameters.")
    return report("train only", True, f"BitFit trains {counts['bias']:,} numbers here, LayerNorm tuning "
                  f"{counts['norm']:,}: both leave every weight matrix alone.")


LORA_TARGETS_FOR_COUNT = ["c_attn", "mlp.c_fc"]


def extra_operations(gpt2, targets=LORA_TARGETS_FOR_COUNT) -> int:
    """Calls into torch that unmerged LoRA on `targets` adds to one forward pass of `gpt2` (a copy is adapted)."""
    one = {"input_ids": torch.arange(1, 19)[None]}          # what is counted does not depend on the tokens
    base = sum(forward_operations(gpt2, one).values())
    adapted = get_peft_model(copy.deepcopy(gpt2), LoraConfig(r=8, lora_alpha=16, target_modules=targets)).eval()
    return sum(forward_operations(adapted, one).values()) - base


def check_lora_operations(prediction, measured, gpt2) -> Verdict:
    """🌿 (predict, then count) The extra calls of unmerged LoRA on c_attn and mlp.c_fc of pico-gpt2-1m; the
    checker counts them itself on a copy of the model it is given."""
    name = "unmerged LoRA's extra operations"
    if not attempted(prediction) or not attempted(measured):
        return report(name, None)
    if isinstance(prediction, bool) or not isinstance(prediction, int):
        return report(name, False, "predict a whole number of operations.")
    truth = extra_operations(gpt2)
    if measured != truth:
        return report(name, False, f"counting gives {truth} extra operations, not {measured!r}: count the adapted model "
                                   "with forward_operations and subtract the frozen model's 269.")
    per_layer = truth // (2 * gpt2.config.n_layer)
    lesson = (f"Each adapted layer adds the same {per_layer} calls, whatever its width: unmerged LoRA's cost grows "
              "with the number of adapted layers, not their size, and on a small model at batch size 1 those calls, "
              "not the arithmetic, are the time. Merged, the count is the frozen model's again.")
    return judge_prediction(name, str(prediction), str(truth), "the count of extra operations is", lesson)
