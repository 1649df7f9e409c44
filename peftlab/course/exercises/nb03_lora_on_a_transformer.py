"""Checkers for 03_lora_on_a_transformer."""
import copy

from peftlab.model import get_peft_model
from peftlab.tuners import LoraConfig

from .checking import Verdict, attempted, judge_prediction, report


def check_adapter_weight_bytes(answer, peft_model) -> Verdict:
    """🌱 Bytes of weights in the saved adapter: every trainable number, stored in fp32."""
    if not attempted(answer):
        return report("adapter weight bytes", None)
    trainable = peft_model.get_nb_trainable_parameters()[0]
    truth = 4 * trainable
    if answer == truth:
        return report("adapter weight bytes", True, f"{truth:,} bytes: 4 per trainable parameter.")
    if answer == trainable:
        return report("adapter weight bytes", False, "that is the number of parameters; each is a 4-byte float32.")
    if answer == 2 * truth:
        return report("adapter weight bytes", False, "only the weights are saved: no gradients, no Adam state.")
    return report("adapter weight bytes", False, "count the trainable parameters (get_nb_trainable_parameters) "
                  "and the bytes of one float32.")


def check_last_two_down_proj(pattern, base_model) -> Verdict:
    """🌿 A regex (full match) targeting only mlp.down_proj of the last two decoder layers."""
    if not attempted(pattern):
        return report("regex targeting", None)
    if not isinstance(pattern, str):
        return report("regex targeting", False, "target_modules as a *string* is read as a regular expression.")
    n = len(base_model.model.layers)
    wanted = {f"model.layers.{i}.mlp.down_proj" for i in (n - 2, n - 1)}
    try:
        wrapped = get_peft_model(copy.deepcopy(base_model), LoraConfig(r=2, target_modules=pattern))
    except ValueError as error:
        return report("regex targeting", False, f"peftlab refused it: {error}")
    got = {name.removeprefix("base_model.model.") for name, m in wrapped.named_modules() if hasattr(m, "lora_A")}
    if got == wanted:
        return report("regex targeting", True, f"{sorted(got)}")
    return report("regex targeting", False, f"it targets {sorted(got)}; wanted {sorted(wanted)}. "
                  "The regex must match the *whole* module name.")


FORGETTING_CHOICES = ("full fine-tuning", "LoRA", "no detectable difference")


def matched_accuracy_rows() -> dict[str, str]:
    """Each method's row of the stored forgetting grid at matched accuracy: the gentlest setting (fewest
    rate x steps) whose mean validation accuracy reaches the ceiling."""
    from peftlab.course.experiments import nb03_forgetting
    from peftlab.course.experiments.protocol import load_results
    stored = load_results("nb03_forgetting")
    return {method: nb03_forgetting.gentlest_at_ceiling(stored, method) for method in nb03_forgetting.GRIDS}


def forgetting_run(seed: int = 0) -> dict[str, dict]:
    """The exercise's measurement: both methods trained at their matched-accuracy settings on `seed`, each
    scored as the stored grid scores it (accuracy, ranked and greedy recall, held-out perplexity)."""
    from peftlab.course.experiments import nb03_forgetting
    from peftlab.course.experiments.protocol import load_results
    from peftlab.workbook.data import load_corpus, load_task
    from peftlab.workbook.zoo import load_base_model
    stored = load_results("nb03_forgetting")
    base, tokenizer = load_base_model(stored["settings"]["base_model"])
    task = load_task(stored["settings"]["task"])
    heldout = list(load_corpus()["heldout"]["text"])[:stored["settings"]["n_heldout"]]
    from peftlab.workbook.runtime import one_thread
    runs = {}
    for method, name in matched_accuracy_rows().items():
        row = stored["rows"][name]
        with one_thread():   # as the stored runs: then the seed comes out exactly
            runs[method] = {"seed": seed, "lr": row["lr"], "steps": row["steps"],
                            **nb03_forgetting.run_one(method, row["lr"], row["steps"], seed, base=base,
                                                      tokenizer=tokenizer, task=task, heldout=heldout)}
    return runs


def check_forgetting_prediction(prediction, measured) -> Verdict:
    """🌳 Predict, then measure: at matched accuracy, which keeps more of the capitals it ranked first
    before training: full fine-tuning, LoRA, or neither detectably over the stored seeds? `measured` is
    what forgetting_run(0) returns: the learner's seed-0 run, checked against the stored seed 0."""
    from peftlab.course.experiments.protocol import load_results
    from peftlab.workbook.stats import compare
    title = "forgetting at matched accuracy"
    if not (attempted(prediction) and attempted(measured)):
        return report(title, None)
    if prediction not in FORGETTING_CHOICES:
        return report(title, False, f"predict one of {FORGETTING_CHOICES}.")
    names = matched_accuracy_rows()
    if not (isinstance(measured, dict) and set(measured) == set(names)
            and all(isinstance(run, dict) and "ranked recall" in run for run in measured.values())):
        return report(title, False, "pass what exercises.forgetting_run(0) returns: one run per method.")
    stored = load_results("nb03_forgetting")
    rows = {method: stored["rows"][name] for method, name in names.items()}
    seeds = stored["settings"]["seeds"]
    for method, run in measured.items():
        seed = run.get("seed")
        if seed not in seeds or any(run.get(key) != rows[method][key][seeds.index(seed)] for key in ("test", "ranked recall")):
            return report(title, False, f"this {method} run is not the stored one for its seed: run "
                          "exercises.forgetting_run(0) as it is (one thread, the stored settings).")
    lora, full = rows["LoRA r=4"], rows["full fine-tuning"]
    verdict = compare(lora["ranked recall"], full["ranked recall"], names=("LoRA", "full fine-tuning"))
    found = ("LoRA" if verdict.low > 0 else "full fine-tuning" if verdict.high < 0 else "no detectable difference")
    measured_text = (f"at matched accuracy (full fine-tuning lr {full['lr']:g} for {full['steps']} steps, LoRA lr "
                     f"{lora['lr']:g} for {lora['steps']} steps), capitals ranked first on your seed {measured['LoRA r=4']['seed']}: "
                     f"LoRA {measured['LoRA r=4']['ranked recall']:.3f}, full fine-tuning "
                     f"{measured['full fine-tuning']['ranked recall']:.3f}; over {len(lora['test'])} seeds, LoRA minus "
                     f"full {verdict.difference:+.3f} [{verdict.low:+.3f}, {verdict.high:+.3f}]")
    lesson = ("How much a model forgets follows how hard it is pushed (rate x steps: the grid above), and each "
              "method's gentlest setting that learns the task is where their forgetting can be compared. "
              "Biderman et al. (2024) found LoRA forgetting less at matched accuracy on large models; here the "
              "interval over the seeds decides, not one run.")
    return judge_prediction(title, prediction, found, measured_text, lesson)
