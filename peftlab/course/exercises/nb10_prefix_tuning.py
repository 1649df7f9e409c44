"""Checkers for 10_prefix_tuning."""
import torch

from peftlab.workbook.batching import PromptTargetCollator

from .checking import Verdict, attempted, judge_prediction, report


def check_prefix_parameter_count(answer) -> Verdict:
    """🌱 Trained numbers of a prefix without reparameterisation for a Llama-3-8B-shaped model:
    32 layers, 32 query heads, 8 key/value heads, head_dim 128, P = 10."""
    if not attempted(answer):
        return report("prefix parameter count", None)
    L, q_heads, kv_heads, head_dim, P = 32, 32, 8, 128, 10
    right = L * 2 * P * kv_heads * head_dim
    if answer == right:
        return report("prefix parameter count", True,
                      f"{right:,}: the cache holds key/value heads (8), not query heads, so the prefix does too.")
    if answer == L * 2 * P * q_heads * head_dim:
        return report("prefix parameter count", False,
                      "you counted the 32 query heads; with grouped-query attention the cache has only the 8 key/value heads.")
    if answer == L * P * kv_heads * head_dim:
        return report("prefix parameter count", False, "each layer gets P keys *and* P values: times 2.")
    if answer == 2 * P * kv_heads * head_dim:
        return report("prefix parameter count", False, "that is one layer; prefix tuning puts a prefix in all 32.")
    return report("prefix parameter count", False, "layers x 2 (keys, values) x P x key/value heads x head_dim.")


DEPTH_CHOICES = ("deep P=2", "shallow P=8")


@torch.no_grad()
def records_test_loss(peft_model, tokenizer, rows) -> float:
    """Mean loss on the record tokens and <eos> of `rows`: the notebook's `test_loss`."""
    return float(peft_model(**PromptTargetCollator(tokenizer, add_eos=True)(list(rows))).loss)


def check_depth_or_length(prediction, measured, models, tokenizer, rows) -> Verdict:
    """🌿 Predict, then run: at the same 1,024 trained numbers, a deep prefix of P = 2 or a shallow prompt
    of P = 8: which reaches the lower records test loss? `prediction`: one of DEPTH_CHOICES; `measured`:
    the learner's {choice: test loss} for both; `models`: {choice: the trained model}, measured again."""
    title = "depth or length?"
    if not (attempted(prediction) and attempted(measured)):
        return report(title, None)
    if prediction not in DEPTH_CHOICES:
        return report(title, False, f"predict one of {DEPTH_CHOICES}.")
    if not isinstance(measured, dict) or set(measured) != set(DEPTH_CHOICES):
        return report(title, False, f"measure the test loss of both, as a dict with the keys {DEPTH_CHOICES}.")
    if any(not (isinstance(v, (int, float)) and v > 0) for v in measured.values()):
        return report(title, False, "a test loss is a positive number of nats per token.")
    if not isinstance(models, dict) or set(models) != set(DEPTH_CHOICES):
        return report(title, False, f"pass the two trained models too, as a dict with the keys {DEPTH_CHOICES}.")
    trained = {k: m.get_nb_trainable_parameters()[0] for k, m in models.items()}
    if set(trained.values()) != {1024}:
        return report(title, False, f"both should train 1,024 numbers; these train {trained}.")
    truth = {k: records_test_loss(models[k], tokenizer, rows) for k in DEPTH_CHOICES}
    if any(abs(measured[k] - truth[k]) > 1e-4 for k in DEPTH_CHOICES):
        return report(title, False, "measured again on these models: " + ", ".join(f"{k} {truth[k]:.3f}" for k in truth)
                      + ". Pass test_loss(model, test_rows) of each.")
    winner = min(DEPTH_CHOICES, key=truth.get)
    if winner == "deep P=2":
        lesson = ("Two virtual tokens in every layer beat eight at the input, at the same 1,024 numbers; at 4,096 "
                  "(above) the shallow prompt all but caught up. Depth pays most when the budget of numbers is "
                  "small. One seed each: a tendency to test over seeds, not a law.")
    else:
        lesson = ("Here the longer shallow prompt won at the same count: two virtual keys per layer are too few "
                  "to steer the model, so depth alone is not the whole story.")
    return judge_prediction(title, prediction, winner, "test loss " + ", ".join(f"{k}: {truth[k]:.3f}" for k in truth),
                            lesson)


RATE_CHECK = {"lr": 1e-2, "steps": 40, "seeds": 3}   # the MLP variant's rate and the seed runs' budget


def check_mlp_or_rate(prediction, histories, final) -> Verdict:
    """🌳 Predict, then run: was the MLP variant steadier because of the MLP, or because of its smaller
    rate? `prediction`: "the MLP" or "the rate"; `histories`: the direct prefix's three seed runs at
    the MLP's rate (train's History, whose per-step lr and length are checked); `final`: the notebook's
    final losses per variant. "The rate" wins if the direct prefix at that rate is as steady (spread at
    most twice the MLP's) and as low (mean within 0.1)."""
    title = "the MLP or the rate?"
    choices = ("the MLP", "the rate")
    if not (attempted(prediction) and attempted(histories)):
        return report(title, None)
    if prediction not in choices:
        return report(title, False, f"predict one of {choices}.")
    if not (isinstance(histories, (list, tuple)) and len(histories) == RATE_CHECK["seeds"]
            and all(hasattr(h, "lr") and hasattr(h, "loss") for h in histories)):
        return report(title, False, "pass the three training histories (what train_peft returns second), one per seed.")
    for h in histories:
        if len(h.loss) != RATE_CHECK["steps"] or abs(max(h.lr) - RATE_CHECK["lr"]) > 1e-12:
            return report(title, False, f"each run should be {RATE_CHECK['steps']} steps at a peak rate of "
                          f"{RATE_CHECK['lr']:g}; one ran {len(h.loss)} steps at {max(h.lr):g}.")
    direct = [sum(h.loss[-5:]) / 5 for h in histories]
    mlp = [float(v) for v in final["MLP reparameterised"]]
    spread, mlp_spread = max(direct) - min(direct), max(mlp) - min(mlp)
    mean, mlp_mean = sum(direct) / len(direct), sum(mlp) / len(mlp)
    found = "the rate" if spread <= 2 * mlp_spread and mean <= mlp_mean + 0.1 else "the MLP"
    lesson = ("At the MLP's small rate the direct prefix hardly trains: its raw keys and values need large steps, "
              "and large steps on them are what make it erratic. The MLP gives the prefix a parameterisation "
              "that trains at a small rate; the rate alone does not." if found == "the MLP" else
              "The direct prefix was as steady at the smaller rate: here the rate, not the MLP, made the difference.")
    return judge_prediction(title, prediction, found, f"direct prefix at lr {RATE_CHECK['lr']:g}: final loss "
                            + ", ".join(f"{v:.2f}" for v in direct) + f" (spread {spread:.2f}, mean {mean:.2f}); "
                            f"MLP: spread {mlp_spread:.2f}, mean {mlp_mean:.2f}", lesson)
