"""Checkers for 09_p_tuning."""
import copy

import torch

from peftlab.workbook.evaluate import exact_match

from .checking import Verdict, attempted, judge_prediction, report


def check_encoder_parameter_count(answer) -> Verdict:
    """🌱 Trainable numbers of an MLP prompt encoder: P = 20 virtual tokens, d = 768, H = 768."""
    if not attempted(answer):
        return report("MLP encoder parameter count", None)
    P, d, H = 20, 768, 768
    table, mlp = P * d, (d * H + H) + (H * H + H) + (H * d + d)
    if answer == table + mlp:
        return report("MLP encoder parameter count", True,
                      f"{table + mlp:,}, of which only the {table:,} of the input table are per virtual token; "
                      f"after training, just the {P * d:,} numbers of the output are kept.")
    if answer == table + 3 * d * H:
        return report("MLP encoder parameter count", False, "close: each of the three Linear layers has a bias too.")
    if answer == mlp:
        return report("MLP encoder parameter count", False, "the MLP is right; add the input table h (P x d), it trains too.")
    if answer == P * d:
        return report("MLP encoder parameter count", False,
                      "that is the soft prompt itself (what is saved); during training the MLP's weights train too.")
    return report("MLP encoder parameter count", False,
                  "count the input table (P x d) and three Linear layers d->H, H->H, H->d, with biases.")


ORDER_TOLERANCE = 0.1   # 4 of the 40 test countries


def reversed_prompt(peft_model):
    """A copy of a trained P-tuning model with its virtual tokens in reverse order: the rows of the
    encoder's input table flipped (the MLP acts on each row alone, so its output flips too)."""
    flipped = copy.deepcopy(peft_model)
    table = flipped.prompt_encoder["default"].embedding.weight                      # (P, d)
    with torch.no_grad():
        table.copy_(table.flip(0))
    return flipped


def order_scores(peft_model, tokenizer, rows) -> dict[str, float]:
    """Exact match on `rows` with the trained order and with the virtual tokens reversed."""
    return {"trained order": exact_match(peft_model, tokenizer, rows),
            "reversed": exact_match(reversed_prompt(peft_model), tokenizer, rows)}


def _measured(title: str, measured, keys: set[str], how: str):
    """None if `measured` is a well-formed {key: share} dict, else the verdict that says what to fix."""
    if not isinstance(measured, dict) or set(measured) != keys:
        return report(title, False, f"measure both: {how}.")
    if any(not isinstance(v, (int, float)) or not 0 <= v <= 1 for v in measured.values()):
        return report(title, False, "an exact match is a share of the test countries, between 0 and 1.")
    return None


def check_token_order(prediction, measured, peft_model, tokenizer, rows) -> Verdict:
    """🌿 Predict, then run: does the trained prompt still work with its virtual tokens in reverse order?
    `prediction`: True (exact match stays within ORDER_TOLERANCE) or False; `measured`: the learner's
    {"trained order": exact match, "reversed": exact match} on `rows` (the test countries), which the
    checker measures again on `peft_model` before judging."""
    title = "the order of the virtual tokens"
    if not (attempted(prediction) and attempted(measured)):
        return report(title, None)
    if not isinstance(prediction, bool):
        return report(title, False, f"predict True (reversed stays within {ORDER_TOLERANCE} of the trained order) or False.")
    wrong = _measured(title, measured, {"trained order", "reversed"},
                      '{"trained order": exact_match(...), "reversed": exact_match(...)}')
    if wrong is not None:
        return wrong
    truth = order_scores(peft_model, tokenizer, rows)
    if any(abs(measured[k] - truth[k]) > 1e-9 for k in truth):
        return report(title, False, f"measured again on this model: trained order {truth['trained order']:.3f}, reversed "
                      f"{truth['reversed']:.3f}, not your {measured['trained order']:.3f} and {measured['reversed']:.3f}. "
                      "Score all 40 test countries with exact_match, the reversed copy made with copy.deepcopy.")
    drop = truth["trained order"] - truth["reversed"]
    same = abs(drop) <= ORDER_TOLERANCE + 1e-9   # 4 of 40 countries is 0.1 exactly, whatever the float rounding
    if same:
        lesson = ("The order barely mattered here: the prompt acts more like a set of vectors the query attends "
                  "to than like a sentence.")
    else:
        lesson = ("The order matters: the virtual tokens are read causally at positions 0..P-1 (rotary "
                  "positions), so each was trained for its place and for what comes before it. A soft prompt is "
                  "a sequence, not a bag of vectors, which is also why P-tuning's LSTM tries to tie neighbours together.")
    return judge_prediction(title, "about the same" if prediction else "a drop", "about the same" if same else "a drop",
                            f"trained order {truth['trained order']:.3f}, reversed {truth['reversed']:.3f}", lesson)


TRANSFER_QUERY = "capital of {c} ? answer :"   # the probe without its first two tokens


def check_prompt_transfer(prediction, measured, peft_model, tokenizer, rows) -> Verdict:
    """🌳 Predict, then measure: the prompt learned in front of the probe, in front of TRANSFER_QUERY.
    `prediction`: True if it still retrieves at least half as many test countries as with the probe;
    `measured`: {"probe": exact match, "new query": exact match} on `rows`, checked by measuring again."""
    title = "the learned prompt with another query"
    if not (attempted(prediction) and attempted(measured)):
        return report(title, None)
    if not isinstance(prediction, bool):
        return report(title, False, "predict True (at least half as many countries with the new query) or False.")
    wrong = _measured(title, measured, {"probe", "new query"},
                      '{"probe": exact_match(...), "new query": exact_match(...)}')
    if wrong is not None:
        return wrong
    reworded = [{"prompt": TRANSFER_QUERY.format(c=row["country"]), "target": row["target"]} for row in rows]
    truth = {"probe": exact_match(peft_model, tokenizer, rows), "new query": exact_match(peft_model, tokenizer, reworded)}
    if any(abs(measured[k] - truth[k]) > 1e-9 for k in truth):
        return report(title, False, f"measured again on this model: probe {truth['probe']:.3f}, new query "
                      f"{truth['new query']:.3f}, not your {measured['probe']:.3f} and {measured['new query']:.3f}. "
                      f"Score all 40 test countries, the new rows built with TRANSFER_QUERY.format(c=row['country']).")
    kept = truth["new query"] >= truth["probe"] / 2
    lesson = ("P-tuning learned how to ask *with this query*: the virtual tokens were fitted to the exact words that "
              "follow them, so deleting two of those words loses most of what they retrieved. A learned prompt is a "
              "patch for one query format, which is why the probe's format is fixed before the prompt is trained."
              if not kept else
              "The prompt carried over to a nearby query: what it learned is not tied to the exact words after it.")
    return judge_prediction(title, "kept half" if prediction else "lost more than half",
                            "kept half" if kept else "lost more than half",
                            f"probe {truth['probe']:.3f}, new query {truth['new query']:.3f}", lesson)
