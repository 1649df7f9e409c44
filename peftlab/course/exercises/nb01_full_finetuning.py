"""Checkers for 01_full_finetuning."""
import copy
import functools

import torch

from peftlab.workbook.memory import measured_bytes, memory_breakdown

from .checking import Verdict, attempted, call_stub, judge_prediction, report

GiB, GB = 2**30, 1e9


def check_memory_7b(answer_gib) -> Verdict:
    """🌱 Memory (GiB) to fully fine-tune a 7B model with Adam in mixed precision, activations excluded."""
    if not attempted(answer_gib):
        return report("7B memory", None)
    truth = memory_breakdown(int(7e9), precision="mixed")["total"]
    if abs(answer_gib - truth / GiB) <= 0.01 * truth / GiB:
        return report("7B memory", True, f"{truth / GiB:.1f} GiB: 16 bytes for every parameter.")
    if abs(answer_gib - truth / GB) <= 0.01 * truth / GB:
        return report("7B memory", False, f"{answer_gib:.1f} is in GB (1e9 bytes); the question asks "
                      "for GiB (2**30 bytes). Divide the bytes by 2**30.")
    for missing, per_param in [("the fp32 master weights", 12), ("the two Adam moments", 8),
                               ("the gradients", 14)]:
        if abs(answer_gib - 7e9 * per_param / GiB) <= 0.01 * 7e9 * per_param / GiB:
            return report("7B memory", False, f"close: you left out {missing}.")
    return report("7B memory", False, "count bytes per parameter: 16-bit weight (2), 16-bit gradient (2), "
                  "fp32 master weight (4), Adam's two fp32 moments (4 + 4).")


def last_layer_and_norm(model) -> set[str]:
    """The names of the parameters that should train: the last decoder layer's and the final norm's."""
    last = len(model.model.layers) - 1
    return {n for n, _ in model.named_parameters() if n.startswith((f"model.layers.{last}.", "model.norm."))}


def check_freeze_all_but_last_layer(fn, model) -> Verdict:
    """🌿 A function that leaves only the last decoder layer and the final norm trainable."""
    probe = copy.deepcopy(model)
    if call_stub(fn, probe) is None and all(p.requires_grad for p in probe.parameters()):
        return report("freeze all but the last layer", None)
    last = len(probe.model.layers) - 1
    should_train = last_layer_and_norm(probe)
    wrong = [n for n, p in probe.named_parameters() if p.requires_grad != (n in should_train)]
    if not wrong:
        n_train = sum(p.numel() for p in probe.parameters() if p.requires_grad)
        return report("freeze all but the last layer", True, f"{n_train:,} parameters train.")
    return report("freeze all but the last layer", False, f"{len(wrong)} parameters have the wrong "
                  f"requires_grad, e.g. {wrong[0]!r}. Set p.requires_grad = False on every parameter, "
                  f"then True on those of model.layers[{last}] and model.norm.")


def check_adam_state_bytes(fn, model) -> Verdict:
    """🌳 Sum the bytes of Adam's state tensors (exp_avg, exp_avg_sq), skipping the step counter."""
    probe = copy.deepcopy(model).train()
    optimizer = torch.optim.AdamW(probe.parameters(), lr=1e-3)
    ids = torch.arange(8).view(1, 8)
    probe(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    answer = call_stub(fn, optimizer)
    if not attempted(answer):
        return report("Adam state bytes", None)
    truth = measured_bytes(probe, optimizer)["Adam moments"]
    if answer == truth:
        return report("Adam state bytes", True, f"{truth:,} bytes = 8 bytes per parameter.")
    if answer > truth:
        return report("Adam state bytes", False, f"{answer:,} > {truth:,}: did you count the 'step' "
                      "entry? It is a bookkeeping scalar, not a per-parameter state.")
    return report("Adam state bytes", False, f"{answer:,} != {truth:,}. Walk optimizer.state.values(); "
                  "each is a dict of tensors: add t.numel() * t.element_size().")


ONE_LAYER = {"lr": 3e-3, "steps": 20, "seed": 0, "n_test": 500}   # the run the exercise asks for


@functools.cache
def _reference_run() -> dict:
    return one_layer_run(_freeze_reference)


def _freeze_reference(model) -> None:
    trained = last_layer_and_norm(model)
    for name, p in model.named_parameters():
        p.requires_grad = name in trained


def one_layer_run(freeze) -> dict:
    """The exercise's run: `freeze` applied to the 1M model, then 20 steps of 16 at lr 3e-3, seed 0,
    scored on 500 test reviews; the trained model is kept."""
    from peftlab.course.experiments.protocol import Method, run_method
    from peftlab.workbook.data import load_task
    test = list(load_task("sentiment")["test"])[:ONE_LAYER["n_test"]]
    return run_method(Method(None, (ONE_LAYER["lr"],), prepare_base=freeze), ONE_LAYER["lr"], ONE_LAYER["seed"],
                      base_name="pico-llama-1m", task_name="sentiment", steps=ONE_LAYER["steps"], batch_size=16,
                      eval_rows={"test": test}, keep_model=True)


def check_one_layer_against_all(prediction, run, tokenizer) -> Verdict:
    """🌿 Predict, then measure: the last layer alone for 20 steps against full fine-tuning's 20 steps."""
    from peftlab.course.experiments.budgets import STEP_METHODS
    from peftlab.course.experiments.protocol import load_results
    from peftlab.workbook.evaluate import fact_recall_by_rank
    name = "one layer against all of them"
    if not (attempted(prediction) and attempted(run)):
        return report(name, None)
    guess = str(prediction).strip().lower()
    if guess not in ("above", "below"):
        return report(name, False, f"predict 'above' or 'below'; got {prediction!r}.")
    if not (isinstance(run, dict) and "test" in run and "model" in run):
        return report(name, False, "pass what one_layer_run(freeze_all_but_last_layer) returns: a dict with "
                      "'test' (the accuracy) and 'model' (the trained model).")
    expected = _reference_run()
    if run["trainable"] != expected["trainable"] or run["test"] != expected["test"]:
        return report(name, False, f"this run trained {run['trainable']:,} parameters to {run['test']:.3f}; the last "
                      f"layer and the final norm alone give {expected['trainable']:,} and {expected['test']:.3f}. Fix "
                      "freeze_all_but_last_layer (its checker above says how), then run one_layer_run again.")
    full = load_results("budgets")["steps"][str(ONE_LAYER["steps"])]["full fine-tuning"]
    reference = full["test"][ONE_LAYER["seed"]]
    ranked = fact_recall_by_rank(run["model"], tokenizer)
    measured = (f"{run['test']:.3f} against full fine-tuning's {reference:.3f} on the same seed and budget (its three "
                f"seeds: {full['test_min']:.3f}-{full['test_max']:.3f}, at lr {full['lr']:g}, the best on validation of "
                f"{', '.join(f'{lr:g}' for lr in STEP_METHODS['full fine-tuning'].lrs)}); "
                f"the capitals it ranks first: {ranked:.3f}")
    why = ("Training fewer weights need not learn slower: the last layer sits next to the label word's logit, and "
           "it trains at a rate too large for all the weights at once; the frozen layers below keep what they knew. "
           "Choosing what trains is already a PEFT idea (BitFit and LayerNorm tuning, notebook 07), and a quarter "
           "of the model is not efficient yet: LoRA (notebook 03) trains 1/34 as many.")
    return judge_prediction(name, guess, "above" if run["test"] > reference else "below", measured, why)
