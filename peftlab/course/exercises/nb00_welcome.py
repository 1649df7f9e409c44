"""Checkers for 00_welcome: three predictions, each judged against the learner's own measurement."""
import re

from peftlab.workbook.data.corpus import CAPITAL_TEMPLATES

from .checking import Verdict, attempted, report

FEW_SHOT_COUNTS = (0, 2, 4, 8)
GOOD_ENOUGH = 0.65          # the notebook's line for "better than chance": chance + 15 points


def check_token_count(prediction, measured, prompt: str, tokenizer) -> Verdict:
    """🌱 How many tokens does `prompt` have? Predicted first, then measured with the tokenizer."""
    title = "count the tokens"
    if not (attempted(prediction) and attempted(measured)):
        return report(title, None)
    ids = tokenizer(prompt)["input_ids"]
    if measured != len(ids):
        return report(title, False, f"your measurement says {measured}; measure with "
                      "len(tokenizer(prompt)['input_ids']), which counts every token the model reads.")
    tokens = tokenizer.convert_ids_to_tokens(ids)
    unknown = [word for word, token in zip(prompt.split(), tokens[1:]) if token == tokenizer.unk_token]
    words = len(prompt.split())
    split_punctuation = len(re.findall(r"[^\W_]+|[^\w\s]", prompt))
    lesson = (f"The tokenizer cuts at spaces only and knows the corpus's words exactly as written, so "
              f"{unknown} became <unk>: the model cannot read them. Write prompts as the corpus does, "
              "with a space around every punctuation mark." if unknown else "Every word is in the vocabulary.")
    if prediction == len(ids):
        return report(title, True, f"{len(ids)} tokens: <bos> and {words} space-separated words. {lesson}")
    if prediction == words:
        return report(title, False, f"{prediction} counts the words; every encoded text also starts with <bos>.")
    if prediction in (split_punctuation, split_punctuation + 1):
        return report(title, False, f"you split the punctuation off the words ({prediction}); the tokenizer "
                      f"measured {len(ids)}. Look at convert_ids_to_tokens: {tokens}")
    return report(title, False, f"you predicted {prediction}, the tokenizer measured {len(ids)}: "
                  f"{tokens}. Compare them one by one.")


def pretraining_phrasing(template: str) -> bool:
    """Is `template` ("... {c} ...") the start of a capital sentence the corpus was written with?"""
    return any(t.startswith(template + " {k}") for t in CAPITAL_TEMPLATES)


def check_phrasings(predictions, measured) -> Verdict:
    """🌿 For each phrasing: does the base model recall at least half the capitals after it?"""
    title = "which phrasings does it know?"
    if not isinstance(predictions, dict) or not all(attempted(p) for p in predictions.values()) \
            or not attempted(measured):
        return report(title, None)
    if not isinstance(measured, dict) or set(measured) != set(predictions):
        return report(title, False, "measure every phrasing you predicted: "
                      "{t: evaluate.fact_recall(model, tokenizer, t) for t in predictions}.")
    if any(not isinstance(p, bool) for p in predictions.values()):
        return report(title, False, "predict True (at least half the capitals) or False for each phrasing.")
    if any(not 0 <= value <= 1 for value in measured.values()):
        return report(title, False, "a recall is a share of the 106 countries, between 0 and 1.")
    known = {t: value >= 0.5 for t, value in measured.items()}
    wrong = [t for t in predictions if predictions[t] != known[t]]
    summary = "; ".join(f"{t!r}: {measured[t]:.2f}" for t in measured)
    seen = [t for t in measured if pretraining_phrasing(t)]
    lesson = (f"Recall is high only after phrasings the corpus was written with ({len(seen)} of yours: "
              f"{seen}); a paraphrase a person reads as the same question gets almost nothing. The facts "
              "are in the weights, tied to the words that led to them; fine-tuning and prompt learning "
              "teach a new way in.")
    if wrong:
        return report(title, False, f"measured {summary}. Your prediction was off for {wrong}. {lesson}")
    return report(title, True, f"measured {summary}. {lesson}")


def with_examples(rows, examples) -> list[dict]:
    """Each row with its prompt preceded by "<example prompt> <label> ." for every example."""
    shots = " ".join(f"{e['prompt']}{e['target']} ." for e in examples)
    return [{**row, "prompt": f"{shots} {row['prompt']}".strip()} for row in rows]


def smallest_count(accuracies: dict) -> int | str:
    """The fewest examples whose accuracy reaches GOOD_ENOUGH, or "none"."""
    enough = [k for k in sorted(accuracies) if accuracies[k] >= GOOD_ENOUGH]
    return enough[0] if enough else "none"


def check_examples_in_the_prompt(prediction, accuracies) -> Verdict:
    """🌳 The fewest labelled examples in front of a review that lift sentiment accuracy to 0.65."""
    title = "examples in the prompt"
    if not (attempted(prediction) and attempted(accuracies)):
        return report(title, None)
    if prediction not in (*FEW_SHOT_COUNTS, "none"):
        return report(title, False, f"predict one of {FEW_SHOT_COUNTS} or 'none'.")
    if not isinstance(accuracies, dict) or set(accuracies) != set(FEW_SHOT_COUNTS):
        return report(title, False, f"measure the accuracy for each number of examples in {FEW_SHOT_COUNTS}, "
                      "as a dict {k: accuracy}.")
    if any(not 0 <= a <= 1 for a in accuracies.values()):
        return report(title, False, "an accuracy is a share of the test rows, between 0 and 1.")
    found = smallest_count(accuracies)
    summary = ", ".join(f"{k}: {a:.3f}" for k, a in sorted(accuracies.items()))
    if found == "none":
        lesson = ("None of them reached 0.65: this model cannot pick the task up from examples in its context; "
                  "training has to put it in the weights.")
    else:
        lesson = (f"With {found} examples the model does better than chance without any training: it picks "
                  "the format up from its context, the in-context learning that Brown et al. (2020, "
                  "arXiv:2005.14165) found in GPT-3. But every example makes every prompt longer, the "
                  "context limits how many fit, and fine-tuning (notebook 01) does better with the bare prompt.")
    if prediction != found:
        return report(title, False, f"accuracy by number of examples: {summary}; the first at or above "
                      f"{GOOD_ENOUGH} is {found!r}, not {prediction!r}. {lesson}")
    return report(title, True, f"accuracy by number of examples: {summary}. {lesson}")
