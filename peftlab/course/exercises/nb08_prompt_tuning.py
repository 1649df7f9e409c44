"""Checkers for 08_prompt_tuning."""
import functools

import torch

from .checking import Verdict, attempted, call_stub, judge_prediction, report

N_TEST = 400                      # the notebook scores on its first 400 test reviews
CHANCE_LINE = 0.6                 # at most this: no better than guessing (chance 0.5; always one label 0.515)


def check_prompt_parameter_count(answer) -> Verdict:
    """🌱 Trained numbers of a 100-token soft prompt on T5-XXL (d = 4096, 24 blocks per stack, 11B parameters)."""
    if not attempted(answer):
        return report("soft prompt parameter count", None)
    P, d, layers = 100, 4096, 24
    if answer == P * d:
        return report("soft prompt parameter count", True,
                      f"{P * d:,}: about {P * d / 11e9:.4%} of the 11 billion parameters, and the same for every layer count.")
    if answer in (P * d * layers, P * d * layers * 2, P * d * layers * 4):
        return report("soft prompt parameter count", False,
                      "that counts a vector per layer (or keys and values per layer): that is prefix tuning. "
                      "A soft prompt enters once, at the input embeddings.")
    if answer == P:
        return report("soft prompt parameter count", False, "each virtual token is a whole vector of width d, not one number.")
    return report("soft prompt parameter count", False, "a soft prompt is a P x d table: one input embedding per virtual token.")


def stored_rows() -> dict:
    """Notebook 08's stored runs (results/nb08_prompts.json)."""
    from peftlab.course.experiments.protocol import load_results
    return load_results("nb08_prompts")


def accuracy_problem(accuracy) -> str | None:
    """Why `accuracy` cannot be a label accuracy on the notebook's 400 test reviews (None: it can)."""
    if not isinstance(accuracy, int | float) or not 0 <= accuracy <= 1:
        return f"accuracy {accuracy!r}: expected a fraction between 0 and 1, as label_accuracy returns."
    if abs(accuracy * N_TEST - round(accuracy * N_TEST)) > 1e-6:
        return f"{accuracy} is not a count out of {N_TEST}: score on the notebook's `test` (its 400 reviews)."
    return None


def unusable(name: str, prediction, accuracy) -> Verdict | None:
    """The verdict when the answer cannot be judged yet (not attempted, or not an accuracy); else None."""
    if not (attempted(prediction) and attempted(accuracy)):
        return report(name, None)
    if problem := accuracy_problem(accuracy):
        return report(name, False, problem)
    return None


def outcome(accuracy: float, reference: float) -> str:
    """'as good' (within 0.05 of `reference`), 'chance' (at most CHANCE_LINE) or 'between'."""
    if accuracy >= reference - 0.05:
        return "as good"
    return "chance" if accuracy <= CHANCE_LINE else "between"


def judge_outcome(name: str, prediction, accuracy: float, reference: float, why: str) -> Verdict:
    choices = ("as good", "between", "chance")
    guess = str(prediction).strip().lower()
    if guess not in choices:
        return report(name, False, f"predict one of {', '.join(repr(c) for c in choices)}; got {prediction!r}.")
    return judge_prediction(name, guess, outcome(accuracy, reference),
                            f"you measured {accuracy:.3f} against {reference:.3f}", why)


def check_prompt_learning_rate(prediction, accuracy) -> Verdict:
    """🌿 A 32-token prompt (random start, seed 0) trained at LoRA's rate instead of its own."""
    name = "a prompt at LoRA's learning rate"
    if (early := unusable(name, prediction, accuracy)) is not None:
        return early
    random = stored_rows()["init"]["random"]
    return judge_outcome(name, prediction, accuracy, random["test"][0],
                            f"The 100 steps that teach the prompt at its own rate ({random['lr']:g}, chosen on "
                            "validation) are far too few at LoRA's: a rate belongs to a method, not to a task. "
                            "That is why the stored comparisons pick every method's rate on validation.")


def nearest_rows(vectors: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Index of the most cosine-similar row of `table` (V, d) for each row of `vectors` (P, d)."""
    unit = torch.nn.functional.normalize
    return (unit(vectors, dim=-1) @ unit(table, dim=-1).T).argmax(-1)


def check_hard_prompt(to_hard_prompt, prediction, peft_model, tokenizer, rows) -> Verdict:
    """🌿 Replace every virtual token by its nearest word (cosine) and score the hard prompt that results."""
    from peftlab.workbook.data import LABEL_WORDS
    from peftlab.workbook.evaluate import label_accuracy
    name = "the nearest hard prompt"
    if not attempted(prediction):
        return report(name, None)
    prompt = peft_model.prompt_encoder["default"].embedding.weight
    before = prompt.detach().clone()
    hard = call_stub(to_hard_prompt, peft_model)
    if not attempted(hard):
        return report(name, None)
    if not hasattr(hard, "prompt_encoder"):
        return report(name, False, "return the prompt-tuned copy (a PeftModel), with its prompt replaced.")
    if not torch.equal(prompt.detach(), before):
        return report(name, False, "the soft-prompted model changed: work on a copy (copy.deepcopy(peft_model)).")
    table = peft_model.get_input_embeddings().weight.detach()
    got = hard.prompt_encoder["default"].embedding.weight.detach()
    if got.shape != before.shape:
        return report(name, False, f"the hard prompt is {tuple(got.shape)}; it needs one word per virtual token, "
                      f"{tuple(before.shape)}.")
    want = nearest_rows(before, table)
    if not torch.equal(got, table[want]):
        dot = table[(before @ table.T).argmax(-1)]
        if torch.equal(got, dot):
            return report(name, False, "that is the largest dot product, which favours long word vectors: "
                          "normalise both sides first (cosine similarity).")
        return report(name, False, "row i should be the embedding of the word whose embedding is most "
                      "cosine-similar to virtual token i (nearest_words above gives its index).")
    soft_accuracy = label_accuracy(peft_model, tokenizer, rows, LABEL_WORDS)
    hard_accuracy = label_accuracy(hard, tokenizer, rows, LABEL_WORDS)
    words = " ".join(tokenizer.convert_ids_to_tokens(want.tolist()))
    return judge_outcome(name, prediction, hard_accuracy, soft_accuracy,
                            f"The hard prompt reads: '{words}'. Snapped onto its nearest words, the prompt keeps "
                            "only what those words carry; the rest of what it learned lies between them.")


MORE_STEPS = 300   # three times Study 2's budget


@functools.cache
def more_steps_accuracy(steps: int = MORE_STEPS) -> float:
    """The exercise's run: Study 2's 8-token prompt (random start) at the rate its 100-step grid chose, seed 0,
    trained for `steps` steps on one thread, scored as the stored runs are (label accuracy, 400 test reviews)."""
    from peftlab.course.experiments import nb08_prompts
    from peftlab.course.experiments.protocol import run_method
    from peftlab.workbook.data import load_task
    from peftlab.workbook.runtime import one_thread
    stored = stored_rows()
    test = list(load_task("sentiment")["test"])[:stored["settings"]["n_test"]]
    with one_thread():
        return run_method(nb08_prompts.LENGTHS["P=8"], stored["length"]["P=8"]["lr"], 0, base_name=nb08_prompts.SMALL,
                          task_name="sentiment", steps=steps, batch_size=stored["settings"]["batch_size"],
                          eval_rows={"test": test})["test"]


def check_more_steps(prediction, accuracy) -> Verdict:
    """🌳 Too few tokens or too few steps? The 8-token prompt trained for MORE_STEPS steps at its own rate:
    does it reach the 32-token prompt's 100-step accuracy (seed 0, within 0.05)? `accuracy` is the learner's
    run (more_steps_accuracy()), measured again here."""
    name = "too few tokens, or too few steps?"
    if (early := unusable(name, prediction, accuracy)) is not None:
        return early
    if not isinstance(prediction, bool):
        return report(name, False, "predict True (it catches up with the 32-token prompt) or False.")
    truth = more_steps_accuracy()
    if accuracy != truth:
        return report(name, False, f"measured again here: {truth:.3f}, not {accuracy:.3f}. Run "
                      "exercises.more_steps_accuracy(): the 8-token prompt at its own stored rate, seed 0, "
                      f"{MORE_STEPS} steps.")
    stored = stored_rows()["length"]
    reference, before = stored["P=32"]["test"][0], stored["P=8"]["test"][0]
    caught_up = truth >= reference - 0.05
    lesson = ("Three times the steps at its own rate do not buy what four times the tokens do at 100 steps: at this "
              "model size the 8-token prompt is short of capacity, not only of time." if not caught_up else
              "Then the 8-token prompt was short of time, not of tokens.") + (
              " It even ends below its 100-step score: the rate chosen for 100 steps is too large for 300 (the cosine "
              "schedule keeps it high for longer), so steps and rate have to be tuned together." if truth < before else
              "") + (" One seed, and one rate for both budgets (the 100-step grid's): the stored curve above shows "
                     "how the rate and the steps trade off.")
    return judge_prediction(name, "catches up" if prediction else "stays behind",
                            "catches up" if caught_up else "stays behind",
                            f"8 tokens: {before:.3f} after 100 steps, {truth:.3f} after {MORE_STEPS} (lr "
                            f"{stored['P=8']['lr']:g}); 32 tokens after 100 steps: {reference:.3f} (seed 0)", lesson)


def check_mixed_task_batch(fn) -> Verdict:
    """🌳 One frozen model, many tasks in one batch: row b gets the prompt of task task_ids[b]."""
    g = torch.Generator().manual_seed(0)
    prompts, embeds = torch.randn(3, 2, 4, generator=g), torch.randn(3, 5, 4, generator=g)
    task_ids = torch.tensor([2, 0, 2])
    result = call_stub(fn, prompts, task_ids, embeds)
    if not attempted(result):
        return report("mixed-task batch", None)
    result = torch.as_tensor(result)
    if tuple(result.shape) != (3, 7, 4):
        return report("mixed-task batch", False, f"shape {tuple(result.shape)}, expected (B, P + n, d) = (3, 7, 4).")
    if torch.equal(result[:, :2], prompts) or torch.equal(result[:, :2], prompts[0].expand(3, -1, -1)):
        return report("mixed-task batch", False,
                      "row b needs the prompt of *its* task, prompts[task_ids[b]]: index the prompts with task_ids.")
    if torch.equal(result[:, -2:], prompts[task_ids]):
        return report("mixed-task batch", False, "the prompt goes in front of the input, not after it.")
    if not torch.equal(result, torch.cat([prompts[task_ids], embeds], dim=1)):
        return report("mixed-task batch", False, "row b should read [prompts[task_ids[b]]; embeds[b]].")
    return report("mixed-task batch", True,
                  "one copy of the model serves every task at once; only a P x d table per task differs.")
