"""Notebook 09's stored encoder comparison (results/nb09_encoders.json) describes the experiment as
peftlab/course/experiments/nb09_encoders.py defines it now: settings, methods, grids, one score per seed."""
from peftlab.course.experiments import nb09_encoders, protocol
from peftlab.course.experiments.protocol import load_results


def test_the_stored_nb09_results_describe_the_experiment_as_defined():
    stored = load_results("nb09_encoders")
    settings = nb09_encoders.SETTINGS
    assert stored["settings"]["task"] == settings["task_name"] == "capitals"
    assert stored["settings"]["steps"] == settings["steps"]
    assert stored["settings"]["batch_size"] == settings["batch_size"]
    assert stored["settings"]["seeds"] == list(settings["seeds"]) and len(settings["seeds"]) >= 3
    assert stored["settings"]["n_test"] == 40 and stored["settings"]["n_validation"] == 16
    assert list(stored["rows"]) == list(nb09_encoders.METHODS)
    for name, row in stored["rows"].items():
        method = nb09_encoders.METHODS[name]
        assert protocol.grew_from(row, method.lrs) and row["lr"] == protocol.chosen_rate(row["validation_by_lr"])
        assert len(row["test"]) == len(settings["seeds"]) and all(0 <= t <= 1 for t in row["test"])
        assert row["test_min"] <= row["test_mean"] <= row["test_max"]


def test_the_methods_train_what_the_notebook_counts():
    """The three rows are the notebook's: 50,560, 759,168 and 1,024 trained numbers (notebook 09's formulas)."""
    stored = load_results("nb09_encoders")
    assert {name: row["trainable"] for name, row in stored["rows"].items()} == {
        "P-tuning, MLP encoder": 50_560, "P-tuning, LSTM encoder": 759_168, "prompt tuning": 1_024}
