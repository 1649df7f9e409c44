"""Checkers for 14_graduation."""
import copy

from peftlab.model import get_peft_model
from peftlab.tuners import LoraConfig
from peftlab.workbook.memory import data_parallel_memory, fewest_gpus

from .checking import Verdict, attempted, call_stub, judge_prediction, report

GIB = 2**30
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]


def check_allreduce_bytes(predicted, base_model) -> Verdict:
    """🌱 bytes DDP all-reduces per step for LoRA r=8 on q, k, v and o of pico-llama-1m (fp32 gradients)."""
    name = "bytes all-reduced per step"
    if not attempted(predicted):
        return report(name, None)
    model = get_peft_model(copy.deepcopy(base_model), LoraConfig(r=8, target_modules=ATTENTION))
    trainable, total = model.get_nb_trainable_parameters()
    right = 4 * trainable
    if predicted == right:
        return report(name, True, f"{trainable:,} trainable parameters x 4 bytes = {right:,} bytes: each step sends "
                      "the adapter's gradients, and never the frozen base's.")
    if predicted == trainable:
        return report(name, False, "that is the number of trainable parameters; each fp32 gradient takes 4 bytes.")
    if predicted == 4 * 8 * 4 * 4 * (128 + 128):
        return report(name, False, "k_proj and v_proj are 64 wide, not 128: grouped-query attention, 2 key/value heads "
                      "of 32.")
    if predicted >= 4 * (total - trainable):
        return report(name, False, "that is full fine-tuning's traffic: DDP only all-reduces parameters that require grad.")
    return report(name, False, "per layer and projection, LoRA trains r x (in + out) numbers: q and o are 128 -> 128, "
                  "k and v 128 -> 64; 4 layers; 4 bytes per fp32 gradient.")


def plan_for(size: str = "13B", method: str = "full", gpu_bytes: float = 80 * GIB) -> tuple[int, int]:
    """(fewest GPUs, then the lowest ZeRO stage that fits on that many)."""
    options = [(fewest_gpus(size, method, gpu_bytes, stage), stage) for stage in range(4)]
    return min((n, stage) for n, stage in options if n is not None)


def check_cluster_plan(gpus, stage) -> Verdict:
    """🌿 fewest 80 GB GPUs, and then the lowest ZeRO stage, that fully fine-tune Llama 2 13B (batch 1 x 512 each)."""
    name = "a plan for Llama 2 13B"
    if not (attempted(gpus) and attempted(stage)):
        return report(name, None)
    if stage not in (0, 1, 2, 3) or not isinstance(gpus, int) or gpus < 1:
        return report(name, False, "gpus is a whole number of GPUs (1, 2, 3, ...); stage is 0, 1, 2 or 3.")
    right_gpus, right_stage = plan_for()
    bill = data_parallel_memory("13B", "full", gpus, stage)["total"] / GIB
    if bill > 80:
        hint = ("stage 0 is plain DDP: every GPU holds every state, so more GPUs never help." if stage == 0 else
                "more GPUs, or a higher stage, divide more of the bill.")
        return report(name, False, f"{gpus} GPU(s) with ZeRO-{stage}: {bill:.1f} GiB on each, over 80: {hint}")
    if gpus > right_gpus:
        return report(name, False, f"that fits ({bill:.1f} GiB each), but fewer GPUs would too: any count works, not "
                      "only powers of two; try one fewer and look again.")
    lower = [s for s in range(stage) if data_parallel_memory("13B", "full", gpus, s)["total"] <= 80 * GIB]
    if lower:   # only where it is true: a lower stage really fits on this many GPUs
        return report(name, False, f"that fits ({bill:.1f} GiB each), but ZeRO-{lower[0]} fits on {gpus} GPUs too; "
                      "ZeRO-3 gathers the weights in every forward and backward pass: 1.5 times the traffic of "
                      "stages 0-2.")
    below = "" if stage == 0 else \
        f" (ZeRO-{stage - 1} needs {data_parallel_memory('13B', 'full', gpus, stage - 1)['total'] / GIB:.1f})"
    return report(name, True, f"{gpus} GPUs with ZeRO-{stage}: {bill:.1f} GiB each{below}. Fewest GPUs first, then "
                  "the lowest stage: stage 3 adds communication.")


# Token sums and token counts per rank of a few global batches (2 and 4 ranks, unequal counts).
SPLITS = [[(23.0, 16), (31.5, 17)], [(5.0, 10), (9.0, 30)], [(1.0, 3), (2.0, 4), (3.5, 5), (8.0, 6)]]


QUESTION = SPLITS[0]   # the question's two ranks: a loss sum of 23.0 over 16 target tokens, 31.5 over 17


def check_rank_loss(prediction, measured, rank_loss) -> Verdict:
    """🌳 predict whether the mean of the ranks' mean losses is the batch's mean loss (True/False); measure
    both on QUESTION ({"mean of rank means": x, "batch mean": y}); then write
    rank_loss(loss_sum, rank_tokens, global_tokens, world_size) whose average over ranks is the batch's mean."""
    name = "a loss that splits"
    if not (attempted(prediction) and attempted(measured)):
        return report(name, None)
    if not isinstance(prediction, bool):
        return report(name, False, "predict True (the mean of the ranks' means is the batch's mean) or False.")
    truth = {"mean of rank means": sum(s / n for s, n in QUESTION) / len(QUESTION),
             "batch mean": sum(s for s, _ in QUESTION) / sum(n for _, n in QUESTION)}
    if not isinstance(measured, dict) or set(measured) != set(truth) or \
            any(not isinstance(measured[k], (int, float)) or abs(measured[k] - truth[k]) > 1e-9 for k in truth):
        return report(name, False, 'measure both on the question\'s numbers: {"mean of rank means": (23.0 / 16 + '
                      '31.5 / 17) / 2, "batch mean": (23.0 + 31.5) / (16 + 17)}.')
    equal = abs(truth["mean of rank means"] - truth["batch mean"]) < 1e-12
    verdict = judge_prediction(name, "equal" if prediction else "different", "equal" if equal else "different",
                               f"mean of the ranks' means {truth['mean of rank means']:.4f}, batch mean "
                               f"{truth['batch mean']:.4f}", "Means over 16 and over 17 tokens, averaged, weigh each "
                               "token of the smaller rank a little more than the batch's mean does.")
    if not verdict:
        return verdict
    results = []
    for split in SPLITS:
        tokens = sum(n for _, n in split)
        losses = [call_stub(rank_loss, s, n, tokens, len(split)) for s, n in split]
        if not all(attempted(x) for x in losses):
            return report(name, None)
        results.append((split, tokens, sum(float(x) for x in losses) / len(split)))   # what DDP's average gives
    if all(abs(mean - sum(s for s, _ in split) / tokens) < 1e-9 for split, tokens, mean in results):
        return report(name, True, "and rank_loss is sum x world_size / global tokens: each token counts once, whatever "
                      "rank holds it. That is what num_items_in_batch does in ShardedCollator (and "
                      "average_tokens_across_devices in transformers' Trainer).")
    split, tokens, mean = results[0]
    if abs(mean - sum(s / n for s, n in split) / len(split)) < 1e-9:
        return report(name, False, "that is each rank's own mean: the mean of means you measured differs from the batch's.")
    if abs(mean * len(split) - sum(s for s, _ in split) / tokens) < 1e-9:
        return report(name, False, "right weighting, but DDP *averages* the ranks' gradients: multiply by world_size.")
    return report(name, False, "the batch's loss is (sum over all its tokens) / global_tokens; DDP averages over ranks.")
