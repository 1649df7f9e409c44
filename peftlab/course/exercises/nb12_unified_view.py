"""Checkers for 12_unified_view."""
import statistics

from .checking import Verdict, attempted, judge_prediction, report

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


def expected_choices(results: dict) -> dict[str, list[str]]:
    """The scenario rules of the exercise, applied to the stored Llama rows: for each scenario the rows
    that satisfy its rule and that no eligible row beats detectably (stats.rank's first group over the
    seeds; "serve" is decided by file size, which has no seeds, so it has one answer)."""
    from peftlab.workbook.stats import rank
    rows = {n: r for n, r in results["rows"].items() if r["base_model"] == "pico-llama-1m"}
    good = [n for n, r in rows.items() if r["test_mean"] >= 0.95]
    serve = min(good, key=lambda n: rows[n]["saved_bytes"])
    memory = [n for n, r in rows.items() if r["memory"]["total"] <= 16 * 2**20]
    knowledge = [n for n, r in rows.items() if _mean(r["heldout_perplexity"]) < 3]
    return {"serve": [serve],
            "memory": rank({n: rows[n]["test"] for n in memory})[0],
            "knowledge": rank({n: rows[n]["test"] for n in knowledge})[0]}


def check_choices(choices, results: dict) -> Verdict:
    """🌿 One row per scenario, by the rule the exercise gives; where the seeds cannot separate the best
    rows, any of them is right (and the verdict says which were tied)."""
    if not isinstance(choices, dict) or not any(attempted(v) for v in choices.values()):
        return report("choose a method", None)
    right = expected_choices(results)
    unknown = [c for c in choices.values() if attempted(c) and c not in results["rows"]]
    if unknown:
        return report("choose a method", False, f"use the row names of the table exactly; not a row: {unknown}")
    for scenario, names in right.items():
        picked = choices.get(scenario)
        if picked in names:
            continue
        row = results["rows"].get(picked) if attempted(picked) else None
        if scenario == "serve" and row is not None and row["test_mean"] < 0.95:
            return report("choose a method", False, f"{picked} scores {row['test_mean']:.3f} on average, under 0.95.")
        if scenario == "memory" and row is not None and row["memory"]["total"] > 16 * 2**20:
            return report("choose a method", False, f"{picked} holds {row['memory']['total'] / 2**20:.1f} MiB per step.")
        if scenario == "knowledge" and row is not None and _mean(row["heldout_perplexity"]) >= 3:
            return report("choose a method", False,
                          f"{picked} leaves a perplexity of {_mean(row['heldout_perplexity']):.1f}: too much forgotten.")
        return report("choose a method", False, f"{scenario!r}: not yet; apply the rule to every Llama row.")
    tied = {s: names for s, names in right.items() if len(names) > 1}
    return report("choose a method", True, f"serve: {right['serve'][0]} (unmerged: 1,000 adapters share one base, "
                  "and routing, notebook 13, serves them in one batch; merging would mean 1,000 copies of the "
                  "model). " + "".join(f"{s}: the seeds cannot separate {', '.join(n)}, so any of them is right. "
                                       for s, n in tied.items()))


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
    return judge_prediction("predict, then measure", prediction, outcome,
                            f"perplexity {low:.2f} at 0.1, {high:.2f} at 0.3 (test {reference['test']:.3f} -> "
                            f"{run['test']:.3f})", "Larger steps move each rescaling vector l further from 1, and the "
                            "rescaled keys, values and feed-forward inputs with it: forgetting grows with the rate.")
