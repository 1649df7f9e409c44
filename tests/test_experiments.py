"""The comparison protocol and the stored results the notebooks load: the learning rate is chosen on
validation, never on test; a stored file describes the experiment as the code defines it now."""
import json

import pytest

from peftlab.experiments import nb07_adapters, nb11_qlora, protocol
from peftlab.experiments.protocol import Method, compare, load_results


def test_the_learning_rate_is_chosen_on_validation_and_reported_on_test(monkeypatch):
    """A fake run whose validation score prefers lr 0.2 and whose test score prefers lr 0.1."""
    def fake_run(method, lr, seed, **kw):
        return {"trainable": 7, "validation": {0.1: 0.5, 0.2: 0.9}[lr] + seed / 100,
                "test": {0.1: 0.95, 0.2: 0.6}[lr], "final_loss": 1.0}
    monkeypatch.setattr(protocol, "run_method", fake_run)
    monkeypatch.setattr(protocol, "load_task", lambda name: {"validation": [1, 2, 3], "test": [4, 5]})
    result = compare({"m": Method(None, (0.1, 0.2))}, base_name="b", task_name="t", steps=1, batch_size=1,
                     seeds=(0, 1))
    row = result["rows"]["m"]
    assert row["lr"] == 0.2 and row["test"] == [0.6, 0.6] and row["test_mean"] == 0.6
    assert row["validation_by_lr"] == {"0.1": [0.5, 0.51], "0.2": [0.9, 0.91]}
    assert result["settings"]["seeds"] == [0, 1] and result["settings"]["n_test"] == 2


def test_one_real_run_of_the_protocol_is_deterministic():
    rows = {"test": [{"prompt": "Review : the food was good . Sentiment :", "target": " positive", "label": 1}]}
    kw = dict(base_name="pico-gpt2-1m", task_name="sentiment", steps=2, batch_size=4, eval_rows=rows)
    first, second = (protocol.run_method(nb07_adapters.METHODS["(IA)³"], 0.1, 0, **kw) for _ in range(2))
    assert first == second and first["trainable"] == 3584


def test_the_stored_nb07_results_describe_the_experiment_as_defined():
    stored = load_results("nb07_adapters")
    settings = nb07_adapters.SETTINGS
    assert stored["settings"]["base_model"] == settings["base_name"]
    assert stored["settings"]["steps"] == settings["steps"]
    assert stored["settings"]["seeds"] == list(settings["seeds"])
    assert list(stored["rows"]) == list(nb07_adapters.METHODS)
    for name, row in stored["rows"].items():
        assert row["lr"] in nb07_adapters.METHODS[name].lrs and len(row["test"]) == len(settings["seeds"])
        assert row["test_min"] <= row["test_mean"] <= row["test_max"]
    assert list(stored["bottleneck_sizes"]) == [f"m={128 // f}" for f in nb07_adapters.REDUCTION_FACTORS]


def test_the_stored_nb11_results_describe_the_experiment_as_defined():
    stored = load_results("nb11_qlora")
    assert stored["settings"]["steps"] == nb11_qlora.SETTINGS["steps"]
    assert stored["settings"]["seeds"] == list(nb11_qlora.SETTINGS["seeds"])
    assert list(stored["rows"]) == list(nb11_qlora.METHODS)
    assert all(row["lr"] in nb11_qlora.LRS and len(row["test"]) == 5 for row in stored["rows"].values())


def test_missing_results_say_how_to_make_them(tmp_path, monkeypatch):
    monkeypatch.setattr(protocol, "RESULTS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="python -m peftlab.experiments.nope"):
        load_results("nope")
    protocol.save_results("mine", {"rows": {}}, seconds=1.2)
    assert json.loads((tmp_path / "mine.json").read_text())["ran_on"]["seconds"] == 1
