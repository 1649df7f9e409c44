"""The comparison protocol and the stored results the notebooks load: the learning rate is chosen on
validation, never on test; a stored file describes the experiment as the code defines it now."""
import json

import pytest

from peftlab.course.experiments import nb07_adapters, nb11_qlora, protocol
from peftlab.course.experiments.protocol import Method, compare, load_results


def test_the_learning_rate_is_chosen_on_validation_and_reported_on_test(monkeypatch):
    """A fake run whose validation score prefers lr 0.1 and whose test score prefers lr 0.03."""
    def fake_run(method, lr, seed, **kw):
        return {"trainable": 7, "validation": {0.03: 0.5, 0.1: 0.9, 0.3: 0.7}[lr] + seed / 100,
                "test": {0.03: 0.95, 0.1: 0.6, 0.3: 0.7}[lr], "final_loss": 1.0}
    monkeypatch.setattr(protocol, "run_method", fake_run)
    monkeypatch.setattr(protocol, "load_task", lambda name: {"validation": [1, 2, 3], "test": [4, 5]})
    result = compare({"m": Method(None, (0.03, 0.1, 0.3))}, base_name="b", task_name="t", steps=1, batch_size=1,
                     seeds=(0, 1))
    row = result["rows"]["m"]
    assert row["lr"] == 0.1 and row["test"] == [0.6, 0.6] and row["test_mean"] == 0.6
    assert row["validation_by_lr"] == {"0.03": [0.5, 0.51], "0.1": [0.9, 0.91], "0.3": [0.7, 0.71]}
    assert result["settings"]["seeds"] == [0, 1] and result["settings"]["n_test"] == 2


@pytest.mark.parametrize("peak, grid, chosen", [
    (3.0, [0.1, 0.3, 1.0, 3.0, 10.0], 3.0),          # the top rate won twice: two steps up, then interior
    (0.01, [0.003, 0.01, 0.03, 0.1, 0.3, 1.0], 0.01),   # the bottom rate won: down until interior
    (0.3, [0.1, 0.3, 1.0], 0.3),                      # interior at once: no extra runs
    (1e-6, [0.003, 0.01, 0.03, 0.1, 0.3, 1.0], 0.003),   # never interior: stops after MAX_GRID_STEPS
])
def test_a_rate_that_wins_at_the_edge_grows_the_grid(peak, grid, chosen):
    import math
    asked = []

    def run_at(lr):
        asked.append(lr)
        return [{"validation": -abs(math.log10(lr / peak))}]
    best, runs = protocol.pick_rate((0.1, 0.3, 1.0), run_at)
    assert best == chosen and list(runs) == grid and sorted(asked) == grid
    row = {"lr": best, "validation_by_lr": {str(lr): [r["validation"] for r in runs[lr]] for lr in runs}}
    assert protocol.chosen_rate(row["validation_by_lr"]) == best and protocol.grew_from(row, (0.1, 0.3, 1.0))
    assert protocol.is_interior(row) == (peak != 1e-6)


def test_ties_prefer_an_interior_rate_and_a_grid_of_one_is_not_searched():
    flat = protocol.pick_rate((0.1, 0.3, 1.0), lambda lr: [{"validation": 0.44}])   # a collapse: chance everywhere
    assert flat[0] == 0.3 and list(flat[1]) == [0.1, 0.3, 1.0]
    assert protocol.pick_rate((0.1,), lambda lr: [{"validation": 0.9}])[0] == 0.1
    assert [protocol.next_rate(lr, up=True) for lr in (1e-4, 3e-4, 0.3)] == [3e-4, 1e-3, 1.0]
    assert [protocol.next_rate(lr, up=False) for lr in (1e-4, 3e-4, 1.0)] == [3e-5, 1e-4, 0.3]


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
        assert protocol.grew_from(row, nb07_adapters.METHODS[name].lrs) and len(row["test"]) == len(settings["seeds"])
        assert row["lr"] == protocol.chosen_rate(row["validation_by_lr"])
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
    with pytest.raises(FileNotFoundError, match="python -m peftlab.course.experiments.nope"):
        load_results("nope")
    protocol.save_results("mine", {"rows": {}}, seconds=1.2)
    assert json.loads((tmp_path / "mine.json").read_text())["ran_on"]["seconds"] == 1


def test_run_and_save_sets_the_threads_and_records_them_with_the_results(tmp_path, monkeypatch, capsys):
    import torch
    monkeypatch.setattr(protocol, "RESULTS_DIR", tmp_path)
    before = torch.get_num_threads()
    try:
        path = protocol.run_and_save("mine", lambda: {"rows": {"a": 1}}, threads=1)
    finally:
        torch.set_num_threads(before)
    stored = json.loads(path.read_text())
    assert path == tmp_path / "mine.json" and stored["rows"] == {"a": 1} and stored["ran_on"]["threads"] == 1
    assert capsys.readouterr().out.strip() == f"written to {path}"


def test_the_decomposition_observer_records_every_query_projection_every_few_steps():
    from peftlab.course.experiments import nb05_variants
    points = []
    run = protocol.run_method(nb05_variants.METHODS["DoRA r=2"], 1e-2, 0, base_name="pico-llama-1m",
                              task_name="sentiment", steps=4, batch_size=4, eval_rows={},
                              observe=nb05_variants.decomposition_observer(points, "q_proj", every=2))
    assert run["trainable"] == 4352
    assert [(p["step"], p["layer"]) for p in points] == [(s, i) for s in (2, 4) for i in range(4)]
    assert all(p["dM"] >= 0 and p["dD"] >= 0 for p in points) and any(p["dD"] > 0 for p in points)


def test_the_stored_nb05_results_describe_the_experiment_as_defined():
    from peftlab.course.experiments import nb05_variants
    stored = load_results("nb05_variants")
    settings = nb05_variants.SETTINGS
    assert stored["settings"]["steps"] == settings["steps"] and stored["settings"]["seeds"] == list(settings["seeds"])
    assert list(stored["rows"]) == list(nb05_variants.METHODS)
    for name, row in stored["rows"].items():
        assert protocol.grew_from(row, nb05_variants.METHODS[name].lrs) and len(row["test"]) == len(settings["seeds"])
    for family, methods in nb05_variants.BUDGETS.items():
        assert list(stored["budgets"][family]) == list(methods)
        assert all(protocol.grew_from(run, methods[name].lrs) for name, run in stored["budgets"][family].items())
    decomposition = stored["decomposition"]
    assert list(decomposition) == list(nb05_variants.DECOMPOSITION["methods"])
    for runs in decomposition.values():
        assert list(runs) == [str(s) for s in nb05_variants.DECOMPOSITION["seeds"]]
        assert all(len(run["points"]) == 4 * settings["steps"] // nb05_variants.DECOMPOSITION["every"]
                   for run in runs.values())


def test_the_stored_nb06_results_describe_the_experiment_as_defined():
    from peftlab.course.experiments import nb06_adalora
    stored = load_results("nb06_adalora")
    settings = nb06_adalora.SETTINGS
    found = stored["settings"]
    assert found["base_model"] == settings["base_name"] and found["task"] == settings["task_name"]
    assert found["steps"] == settings["steps"] and found["seeds"] == list(settings["seeds"])
    assert found["targets"] == nb06_adalora.TARGETS and found["final_r"] == nb06_adalora.FINAL_R
    assert list(stored["rows"]) == list(nb06_adalora.METHODS)
    budget = nb06_adalora.FINAL_R * len(nb06_adalora.TARGETS) * 4   # 4 decoder layers
    for name, row in stored["rows"].items():
        assert protocol.grew_from(row, nb06_adalora.METHODS[name].lrs) and len(row["test"]) == len(settings["seeds"])
        assert row["test_min"] <= row["test_mean"] <= row["test_max"]
    # The comparison is at the same final budget: AdaLoRA keeps as many ranks as uniform LoRA has.
    lora, adalora = (stored["rows"][n] for n in list(nb06_adalora.METHODS)[:2])
    assert lora["kept_ranks"] == adalora["kept_ranks"] == [budget] * len(settings["seeds"])


def test_nb06_runs_adalora_with_its_allocation_and_deterministically():
    from peftlab.course.experiments import nb06_adalora
    rows = {"test": [{"prompt": "Review : the food was good . Sentiment :", "target": " positive", "label": 1}]}
    method = protocol.Method(lambda: nb06_adalora.adalora(steps=6), (0.03,), on_step=nb06_adalora.allocate,
                             measure=nb06_adalora.report_ranks)
    kw = dict(base_name="pico-llama-1m", task_name="sentiment", steps=6, batch_size=4, eval_rows=rows)
    first, second = (protocol.run_method(method, 0.03, 0, **kw) for _ in range(2))
    assert first == second and first["measured"]["kept_ranks"] == nb06_adalora.FINAL_R * 28   # down to the budget


def test_the_control_keeps_the_same_rank_in_every_layer_and_adalora_does_not():
    """EvenAllocator takes away only the allocation: every layer keeps its own best triplets, as many
    as every other layer, where AdaLoRA's own allocator ranks all triplets together."""
    from peftlab.course.experiments import nb06_adalora
    rows = {"test": [{"prompt": "Review : the food was good . Sentiment :", "target": " positive", "label": 1}]}
    kw = dict(base_name="pico-llama-1m", task_name="sentiment", steps=6, batch_size=4, eval_rows=rows, keep_model=True)
    patterns = {}
    for name, on_step in (("adaptive", nb06_adalora.allocate), ("even", nb06_adalora.allocate_evenly)):
        method = protocol.Method(lambda: nb06_adalora.adalora(steps=6), (0.03,), on_step=on_step)
        model = protocol.run_method(method, 0.03, 0, **kw)["model"]
        patterns[name] = [sum(keep) for keep in model.peft_config["default"].rank_pattern.values()]
    assert sum(patterns["even"]) == sum(patterns["adaptive"]) == nb06_adalora.FINAL_R * 28
    assert set(patterns["even"]) == {nb06_adalora.FINAL_R} and len(set(patterns["adaptive"])) > 1


def test_the_stored_allocations_are_per_seed_and_meet_the_budget():
    from peftlab.course.experiments import nb06_allocation
    stored = load_results("nb06_allocation")
    assert stored["settings"]["seeds"] == list(nb06_allocation.SETTINGS["seeds"])
    for run in stored["runs"].values():
        ranks = run["kept_ranks"]
        assert len(ranks) == nb06_allocation.N_LAYERS and all(len(row) == len(nb06_allocation.TARGETS) for row in ranks)
        assert sum(map(sum, ranks)) == nb06_allocation.SETTINGS["target_r"] * 28


def test_the_stored_unified_results_describe_the_experiment_as_defined():
    from peftlab.course.experiments import unified
    stored = load_results("unified")
    settings, seeds = stored["settings"], list(unified.SETTINGS["seeds"])
    assert settings["task_name"] == unified.SETTINGS["task_name"] and settings["steps"] == unified.SETTINGS["steps"]
    assert settings["seeds"] == seeds and len(seeds) >= 3 and settings["base_models"] == list(unified.BASES)
    assert list(stored["rows"]) == list(unified.METHODS)
    assert all(set(stored["base_reference"][base]) == set(unified.FORGETTING_FIELDS) for base in unified.BASES)
    for name, row in stored["rows"].items():
        method = unified.METHODS[name]
        assert name in unified.BASES[row["base_model"]] and len(method.lrs) == 3 and protocol.grew_from(row, method.lrs)
        assert len(row["test"]) == len(seeds) and row["test_min"] <= row["test_mean"] <= row["test_max"]
        assert all(len(row[field]) == len(seeds) for field in unified.FORGETTING_FIELDS)
        assert all(field in row for field in unified.PROFILE_FIELDS) and row["step_seconds"] > 0
        assert (row["latency_merged"] is not None) == row["merges"] and row["latency_unmerged"] > 0
        memory = row["memory"]
        assert memory["total"] == sum(v for k, v in memory.items() if k != "total") and memory["activations"] > 0
        assert memory["gradients"] == 4 * row["trainable"] and memory["Adam moments"] == 8 * row["trainable"]
        assert 0 < row["weights_file_bytes"] < row["saved_bytes"]


def test_unified_profile_of_a_tiny_run_measures_what_it_says():
    from peftlab.course.experiments import unified
    assert unified.median_step_seconds([0.0, 1.0, 3.0, 4.0]) == 1.0      # intervals 1, 2, 1
    kw = dict(base_name="pico-llama-1m", task_name="sentiment", steps=2, batch_size=4)
    lora = unified.profile(unified.METHODS["LoRA r=2"], 1e-2, **kw)
    assert lora["step_seconds"] > 0 and lora["merges"] and lora["merge_max_abs_logit_diff"] < 1e-4
    assert 0 < lora["weights_file_bytes"] < lora["saved_bytes"] < 20_000      # 3,584 fp32 weights and a config
    memory = lora["memory"]
    assert memory["gradients"] == 4 * 3584 and memory["Adam moments"] == 8 * 3584 and memory["activations"] > 0
    adapter = unified.profile(unified.METHODS["Pfeiffer adapter"], 1e-2, **kw)
    assert not adapter["merges"] and adapter["latency_merged"] is None and "cannot be merged" in adapter["merge_note"]


def test_the_unified_summary_reads_every_axis_of_every_stored_row():
    from peftlab.course.experiments import unified
    stored = load_results("unified")
    summary = unified.summarize(stored)
    assert list(summary) == list(stored["rows"])
    lora = stored["rows"]["LoRA r=2"]
    assert summary["LoRA r=2"]["trainable parameters"] == lora["trainable"] == 3584
    assert summary["LoRA r=2"]["training memory (MiB)"] == lora["memory"]["total"] / 2**20
    assert summary["LoRA r=2"]["held-out perplexity"] == pytest.approx(sum(lora["heldout_perplexity"]) / 3)
    assert all(set(values) == set(unified.AXES) for values in summary.values())
