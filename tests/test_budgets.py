"""experiments/budgets.py: LoRA+ as a step hook equals LoRA+ as optimizer groups, the spectrum of an
update, field accuracy on records, and the stored results against the experiment as defined."""
import copy

import pytest
import torch

from peftlab import create_loraplus_param_groups, get_peft_model
from peftlab.course.experiments import budgets, protocol
from peftlab.course.experiments.protocol import load_results
from peftlab.workbook import PromptTargetCollator, load_base_model, load_task, train


@pytest.fixture(scope="module")
def base():
    torch.set_num_threads(1)
    return load_base_model()


def trained(base, config, steps=4, **options):
    model, tokenizer = base
    torch.manual_seed(0)
    peft_model = get_peft_model(copy.deepcopy(model), config) if config is not None else copy.deepcopy(model)
    rows = list(load_task("sentiment")["train"])[:32]
    make = options.pop("make_on_step", None)
    groups = options.pop("make_groups", None)
    train(peft_model, rows, PromptTargetCollator(tokenizer), steps=steps, lr=1e-3, batch_size=8, progress=False,
          on_step=make(peft_model) if make else None, param_groups=groups(peft_model) if groups else None)
    return peft_model


def test_loraplus_as_a_step_hook_trains_like_loraplus_optimizer_groups(base):
    config = budgets.lora(8, 16)()
    hooked = trained(base, config, make_on_step=budgets.loraplus_steps(16.0))
    grouped = trained(base, config, make_groups=lambda m: create_loraplus_param_groups(m, lr=1e-3))
    plain = trained(base, config)
    weights = {name: p for name, p in grouped.named_parameters() if p.requires_grad}
    for name, p in hooked.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p, weights[name], atol=2e-6, rtol=1e-4)
    b_name = next(n for n in weights if "lora_B" in n)
    assert not torch.allclose(dict(plain.named_parameters())[b_name], weights[b_name], atol=1e-4)   # LoRA+ differs


def test_loraplus_steps_refuses_a_model_without_lora(base):
    with pytest.raises(ValueError, match="needs LoRA layers"):
        budgets.loraplus_steps()(copy.deepcopy(base[0]))


def test_a_rank_2_update_holds_all_its_energy_in_two_directions_full_fine_tuning_does_not(base):
    lora = budgets.update_energy(trained(base, budgets.lora(2, 4)()))["energy_top_k"]
    full = budgets.update_energy(trained(base, None, steps=2))["energy_top_k"]
    assert set(lora) == set(full) == set(budgets.base_weights()) and len(lora) == 8
    for shares in (*lora.values(), *full.values()):
        assert len(shares) == budgets.TOP_K and all(a <= b + 1e-4 for a, b in zip(shares, shares[1:]))
    assert all(shares[1] >= 0.9999 for shares in lora.values())
    assert all(shares[1] < 0.99 for shares in full.values())


def test_energy_shares_of_a_zero_update_is_an_error():
    assert budgets.energy_shares(torch.tensor([1.0, 3.0])).tolist() == pytest.approx([0.9, 1.0])   # sorted first
    with pytest.raises(ValueError, match="update is zero"):
        budgets.energy_shares(torch.zeros(3))


def test_field_accuracy_scores_name_count_and_item_and_refuses_other_tasks(base):
    model, tokenizer = base
    rows = list(load_task("records")["validation"])[:8]
    fields = budgets.field_accuracy(model, tokenizer, rows)
    assert set(fields) == {"name", "count", "item"} and all(0 <= v <= 1 for v in fields.values())
    with pytest.raises(ValueError, match="records task"):
        budgets.field_accuracy(model, tokenizer, list(load_task("sentiment")["test"])[:2])


def test_the_stored_results_describe_the_experiment_as_defined():
    stored = load_results("budgets")
    settings, seeds = stored["settings"], list(budgets.SETTINGS["seeds"])
    assert settings["seeds"] == seeds and len(seeds) >= 3 and settings["step_budgets"] == list(budgets.STEP_BUDGETS)
    assert settings["rank_steps"] == budgets.RANK_STEPS and settings["init_steps"] == budgets.INIT_STEPS
    parts = {"ranks": budgets.RANK_METHODS, "inits": budgets.INIT_METHODS,
             **{f"steps {s}": budgets.STEP_METHODS for s in budgets.STEP_BUDGETS}}
    for part, methods in parts.items():
        rows = stored["steps"][part.split()[1]] if part.startswith("steps") else stored[part]
        assert list(rows) == list(methods)
        for name, row in rows.items():
            assert protocol.grew_from(row, methods[name].lrs) and len(row["test"]) == len(seeds)
            assert row["test_min"] <= row["test_mean"] <= row["test_max"]
            assert row["lr"] == protocol.chosen_rate(row["validation_by_lr"])
    for name in budgets.RANK_METHODS:
        assert len(stored["ranks"][name]["energy_top_k"]) == len(seeds)
    assert len(stored["steps"][str(budgets.RANK_STEPS)]["full fine-tuning"]["energy_top_k"]) == len(seeds)
    records = stored["records"]
    assert list(records["rows"]) == list(budgets.RECORDS_RUNS)
    assert records["settings"]["steps"] == budgets.RECORDS["steps"]
    for row in records["rows"].values():
        assert len(row["curve"]) == budgets.RECORDS["steps"] // budgets.RECORDS["curve_every"]
        assert row["test_with_eos"] <= row["test"]


def test_spread_reads_a_stored_row_as_text_and_a_claim():
    from peftlab.course.experiments.spread import beats, spread
    a = {"test": [0.8, 0.9], "test_mean": 0.85, "test_min": 0.8, "test_max": 0.9}
    b = {"test": [0.5, 0.79], "test_mean": 0.645, "test_min": 0.5, "test_max": 0.79}
    assert spread(a) == "0.850 [0.800-0.900]"
    assert beats(a, b) and not beats(b, a) and not beats(a, a)


def test_plot_spread_draws_means_with_bars_from_the_worst_to_the_best_seed():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from peftlab.course.experiments.spread import plot_spread
    fig, ax = plt.subplots()
    rows = [{"test_mean": 0.6, "test_min": 0.5, "test_max": 0.8}, {"test_mean": 0.9, "test_min": 0.9, "test_max": 0.9}]
    bars = plot_spread(ax, [1, 2], rows, "m")
    line, _, (segments,) = bars.lines
    assert list(line.get_ydata()) == [0.6, 0.9]
    assert [tuple(s[:, 1]) for s in segments.get_segments()] == [(0.5, 0.8), (0.9, 0.9)]
    plt.close(fig)
