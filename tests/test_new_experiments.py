"""The stored results of notebook 03's forgetting grid, notebook 13's merges and notebook 08's P = 8
curve describe the experiments as their scripts define them now, and the scripts' own rules hold."""
import statistics

import pytest

from peftlab.course.experiments import nb03_forgetting, nb08_curve, nb13_merges
from peftlab.course.experiments.protocol import load_results


def test_the_forgetting_grid_is_the_one_defined():
    stored = load_results("nb03_forgetting")
    settings = stored["settings"]
    assert settings["seeds"] == list(nb03_forgetting.SETTINGS["seeds"]) and len(settings["seeds"]) >= 5
    assert settings["step_budgets"] == list(nb03_forgetting.STEP_BUDGETS)
    expected = {f"{m}, {steps} steps, lr {lr:g}" for m, grid in nb03_forgetting.GRIDS.items()
                for steps in nb03_forgetting.STEP_BUDGETS for lr in grid}
    assert set(stored["rows"]) == expected
    for row in stored["rows"].values():
        keys = ("validation", "test", "ranked recall", "perplexity")
        assert all(len(row[key]) == len(settings["seeds"]) for key in keys)
    for method, rate in nb03_forgetting.NOTEBOOK_RATES.items():
        assert rate in nb03_forgetting.GRIDS[method], "the notebook's own rates are rows of the grid"


def test_matched_accuracy_is_the_gentlest_row_at_the_ceiling():
    stored = load_results("nb03_forgetting")
    for method in nb03_forgetting.GRIDS:
        name = nb03_forgetting.gentlest_at_ceiling(stored, method)
        row = stored["rows"][name]
        assert row["method"] == method and statistics.mean(row["validation"]) >= nb03_forgetting.CEILING
        gentler = [r for r in stored["rows"].values()
                   if r["method"] == method and r["lr"] * r["steps"] < row["lr"] * row["steps"]]
        assert all(statistics.mean(r["validation"]) < nb03_forgetting.CEILING for r in gentler)
    with pytest.raises(ValueError, match="No full fine-tuning row reaches"):
        nb03_forgetting.gentlest_at_ceiling({**stored, "settings": {**stored["settings"], "ceiling": 1.5}},
                                            "full fine-tuning")


def test_the_merges_are_the_ones_defined():
    stored = load_results("nb13_merges")
    assert stored["settings"]["seeds"] == list(nb13_merges.SEEDS) and len(nb13_merges.SEEDS) >= 5
    assert stored["settings"]["lambdas"] == list(nb13_merges.LAMBDAS)
    for runs in stored["seeds"].values():
        assert set(runs) == {*nb13_merges.STEPS, *nb13_merges.KINDS}
        for kind in nb13_merges.KINDS:
            run = runs[kind]
            by_weight = run["validation_by_lambda"]
            best = max(nb13_merges.LAMBDAS, key=lambda w: statistics.mean(by_weight[str(w)].values()))
            assert run["lambda"] == best, "the weight is chosen on validation, and only there"


def test_the_curve_is_the_one_defined():
    stored = load_results("nb08_curve")
    settings = stored["settings"]
    assert settings["lrs"] == list(nb08_curve.SETTINGS["lrs"]) and settings["P"] == nb08_curve.SETTINGS["P"]
    assert stored["steps"] == list(range(settings["every"], settings["steps"] + 1, settings["every"]))
    for runs in stored["curves"].values():
        assert set(runs) == {str(s) for s in settings["seeds"]}
        assert all(len(points) == len(stored["steps"]) for points in runs.values())
