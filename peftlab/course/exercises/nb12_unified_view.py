"""Checkers for 12_unified_view."""
import random
import statistics

from peftlab.course.unified_view import pareto_front

from .checking import Verdict, attempted, call_stub, report

FORMS = {"LoRA": "parallel", "(IA)3": "rescale", "BitFit": "shift", "prefix tuning": "gated",
         "Houlsby adapter": "sequential", "parallel adapter": "parallel", "LayerNorm tuning": "rescale"}
HINTS = {
    "LoRA": "LoRA reads the layer's input x and adds s * x A^T B^T beside W x.",
    "(IA)3": "(IA)3 multiplies keys, values (and the feed-forward input) element by element: h <- l * h.",
    "BitFit": "BitFit's delta h is delta b, the same whatever the input.",
    "prefix tuning": "a prefix mixes attention over its own values into each head with a weight lambda(x).",
    "Houlsby adapter": "Houlsby's adapters read the block's output h and add to it: one after the other.",
    "parallel adapter": "a parallel adapter reads the block's input, beside the block.",
    "LayerNorm tuning": "an RMSNorm weight g multiplies the normalized h element by element: like (IA)3's l.",
}


def check_forms(forms) -> Verdict:
    """🌱 The form of delta h for each method."""
    if not isinstance(forms, dict) or not any(attempted(v) for v in forms.values()):
        return report("the forms of delta h", None)
    missing = [name for name in FORMS if name not in forms]
    if missing:
        return report("the forms of delta h", False, f"keep every method in the dict; missing: {missing}")
    wrong = [name for name, form in FORMS.items() if forms[name] != form]
    if wrong:
        return report("the forms of delta h", False, f"{len(wrong)} not yet right. {HINTS[wrong[0]]}")
    return report("the forms of delta h", True, "the parallel forms add new directions; rescale and shift only "
                  "reweight or move what is there, which is why they are so cheap.")


def _mean(values):
    return statistics.mean(values)


def expected_choices(results: dict) -> dict[str, str]:
    """The scenario rules of the exercise, applied to the stored Llama rows."""
    rows = {n: r for n, r in results["rows"].items() if r["base_model"] == "pico-llama-1m"}
    serve = min((n for n, r in rows.items() if r["test_mean"] >= 0.95 and r["merges"]), key=lambda n: rows[n]["saved_bytes"])
    memory = max((n for n, r in rows.items() if r["memory"]["total"] <= 16 * 2**20), key=lambda n: rows[n]["test_mean"])
    knowledge = max((n for n, r in rows.items() if _mean(r["heldout_perplexity"]) < 3), key=lambda n: rows[n]["test_mean"])
    return {"serve": serve, "memory": memory, "knowledge": knowledge}


def check_choices(choices, results: dict) -> Verdict:
    """🌿 One row per scenario, by the rule the exercise gives."""
    if not isinstance(choices, dict) or not any(attempted(v) for v in choices.values()):
        return report("choose a method", None)
    right = expected_choices(results)
    unknown = [c for c in choices.values() if attempted(c) and c not in results["rows"]]
    if unknown:
        return report("choose a method", False, f"use the row names of the table exactly; not a row: {unknown}")
    for scenario, name in right.items():
        picked = choices.get(scenario)
        if picked == name:
            continue
        row = results["rows"].get(picked) if attempted(picked) else None
        if scenario == "serve" and row is not None and not row["merges"]:
            return report("choose a method", False, f"{picked} does not merge: every request would pay its latency.")
        if scenario == "memory" and row is not None and row["memory"]["total"] > 16 * 2**20:
            return report("choose a method", False, f"{picked} holds {row['memory']['total'] / 2**20:.1f} MiB per step.")
        if scenario == "knowledge" and row is not None and _mean(row["heldout_perplexity"]) >= 3:
            return report("choose a method", False,
                          f"{picked} leaves a perplexity of {_mean(row['heldout_perplexity']):.1f}: too much forgotten.")
        return report("choose a method", False, f"{scenario!r}: not yet; apply the rule to every Llama row.")
    return report("choose a method", True, f"serve: {right['serve']}, memory: {right['memory']}, knowledge: "
                  f"{right['knowledge']}. Note the last: when knowledge must survive, the gentle full fine-tuning wins.")


def check_ia3_prediction(prediction, run, reference) -> Verdict:
    """🌳 More or less forgetting for (IA)3 at lr 0.3 than at 0.1; checked against the learner's own run."""
    if not attempted(prediction) or not attempted(run):
        return report("predict, then measure", None)
    if prediction not in ("more", "less"):
        return report("predict, then measure", False, 'write "more" or "less".')
    if not (isinstance(run, dict) and "measured" in run and run.get("trainable") == reference["trainable"]):
        return report("predict, then measure", False, "pass what run_method returns for (IA)3 with the forgetting measure "
                      "(unified.with_measure(..., unified.forgetting('pico-llama-1m'))).")
    high, low = run["measured"]["heldout_perplexity"], reference["measured"]["heldout_perplexity"]
    if high == low:
        return report("predict, then measure", False, "that is the run at 0.1 again: train at lr 0.3.")
    outcome = "more" if high > low else "less"
    message = (f"perplexity {low:.2f} at 0.1, {high:.2f} at 0.3 (test {reference['test']:.3f} -> {run['test']:.3f}): "
               f"{outcome} forgetting.")
    if prediction == outcome:
        return report("predict, then measure", True, message + " Larger steps move the rescaled activations further.")
    return report("predict, then measure", False, message + " Your prediction said otherwise: what does a 3x larger "
                  "step do to each l?")


def check_frontier(fn) -> Verdict:
    """🌳 frontier(points) -> names on the Pareto frontier, sorted by cost."""
    rng = random.Random(0)
    cases = [{"a": (1, 0.5), "b": (2, 0.9), "c": (3, 0.8), "d": (2, 0.9)}, {"only": (5, 0.1)},
             {"x": (1, 1.0), "y": (1, 0.5), "z": (0.5, 0.2)}]
    cases += [{f"m{i}": (rng.choice([1, 2, 3, 10, 100]), rng.choice([0.5, 0.7, 0.9, 1.0])) for i in range(8)}
              for _ in range(20)]
    for points in cases:
        got = call_stub(fn, dict(points))
        if not attempted(got):
            return report("Pareto frontier", None)
        right = pareto_front(points)
        if list(got) == right:
            continue
        if sorted(got) == sorted(right):
            return report("Pareto frontier", False, "the right names; sort them by cost.")
        if set(right) < set(got):
            return report("Pareto frontier", False, f"{sorted(set(got) - set(right))} are beaten: some point costs no "
                          f"more and scores no less. Points: {points}")
        return report("Pareto frontier", False, f"for {points} the frontier is {right}, not {list(got)}. Equal points both stay.")
    return report("Pareto frontier", True, "every point off the frontier is beaten by one on it.")
