"""Checkers for 01_full_finetuning."""
import copy

import torch

from peftlab.course.experiments.budgets import last_layer_and_norm
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


ONE_LAYER_CHOICES = ("ahead", "behind", "no detectable difference")


def _stored_one_layer() -> tuple[dict, dict]:
    """The stored last-layer row (budgets' part "one_layer") and full fine-tuning's at the same budget."""
    from peftlab.course.experiments.budgets import ONE_LAYER_STEPS
    from peftlab.course.experiments.protocol import load_results
    stored = load_results("budgets")
    return stored["one_layer"]["last layer and final norm"], stored["steps"][str(ONE_LAYER_STEPS)]["full fine-tuning"]


def one_layer_run(freeze, seed: int = 0) -> dict:
    """The exercise's run: `freeze` applied to the 1M model, then as budgets' "one_layer" part trains it
    (20 steps of 16, at the learning rate it chose on validation), on `seed`, one thread, scored on the
    500 test reviews; the trained model is kept."""
    from peftlab.course.experiments.budgets import ONE_LAYER_STEPS, SETTINGS
    from peftlab.course.experiments.protocol import Method, run_method
    from peftlab.workbook.data import load_task
    from peftlab.workbook.runtime import one_thread
    row, _ = _stored_one_layer()
    test = list(load_task("sentiment")["test"])[:500]
    with one_thread():
        run = run_method(Method(None, (row["lr"],), prepare_base=freeze), row["lr"], seed,
                         base_name=SETTINGS["base_name"], task_name=SETTINGS["task_name"], steps=ONE_LAYER_STEPS,
                         batch_size=SETTINGS["batch_size"], eval_rows={"test": test}, keep_model=True)
    return {**run, "seed": seed}


def check_one_layer_against_all(prediction, run, tokenizer) -> Verdict:
    """🌿 Predict, then measure: the last layer alone against full fine-tuning at the same 20 steps, each at
    its own rate, judged by compare over the stored seeds; `run` (the learner's seed 0) must be the stored one."""
    from peftlab.workbook.evaluate import fact_recall_by_rank
    from peftlab.workbook.stats import compare
    name = "one layer against all of them"
    if not (attempted(prediction) and attempted(run)):
        return report(name, None)
    guess = str(prediction).strip().lower()
    if guess not in ONE_LAYER_CHOICES:
        return report(name, False, f"predict one of {ONE_LAYER_CHOICES}; got {prediction!r}.")
    if not (isinstance(run, dict) and "test" in run and "model" in run):
        return report(name, False, "pass what one_layer_run(freeze_all_but_last_layer) returns: a dict with "
                      "'test' (the accuracy) and 'model' (the trained model).")
    row, full = _stored_one_layer()
    if run["trainable"] != row["trainable"] or run["test"] != row["test"][run.get("seed", 0)]:
        return report(name, False, f"this run trained {run['trainable']:,} parameters to {run['test']:.3f}; the last "
                      f"layer and the final norm alone give {row['trainable']:,} and {row['test'][0]:.3f} on seed 0. Fix "
                      "freeze_all_but_last_layer (its checker above says how), then run one_layer_run again.")
    verdict = compare(row["test"], full["test"], names=("last layer", "full fine-tuning"))
    found = "ahead" if verdict.low > 0 else "behind" if verdict.high < 0 else "no detectable difference"
    measured = (f"your seed 0: {run['test']:.3f} (lr {row['lr']:g}) against full fine-tuning's {full['test'][0]:.3f} "
                f"(lr {full['lr']:g}); over {len(row['test'])} seeds, last layer minus full "
                f"{verdict.difference:+.3f} [{verdict.low:+.3f}, {verdict.high:+.3f}]; the capitals it still ranks "
                f"first: {fact_recall_by_rank(run['model'], tokenizer):.3f}")
    why = ("Training fewer weights need not learn slower: the last layer sits next to the label word's logit and "
           "trains at a rate of its own; the frozen layers below keep what they knew. With 3 seeds a difference has "
           "to be large to show: that is what the interval says. Choosing what trains is already a PEFT idea "
           "(BitFit and LayerNorm tuning, notebook 07), and a quarter of the model is not efficient yet: LoRA "
           "(notebook 03) trains 1/34 as many.")
    return judge_prediction(name, guess, found, measured, why)
