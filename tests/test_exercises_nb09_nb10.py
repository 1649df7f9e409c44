"""The predict-then-run checkers of notebooks 09 and 10: 'not attempted' for the stubs, True when the
prediction matches the learner's own measurement, a lesson either way, and a clear message (never an
exception) for a malformed answer. (Their other checkers: tests/test_nb09_helpers.py, test_nb10_helpers.py.)"""
import pytest

from peftlab.course.exercises import nb09_p_tuning as nb09
from peftlab.course.exercises import nb10_prefix_tuning as nb10


def last_line(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


# --------------------------------------------------------------------------- 09


@pytest.fixture(scope="module")
def untrained_prompt():
    """An untrained P-tuning model on the 1M model and 6 test countries: cheap, and enough to check that
    the checkers measure again (the judging logic is tested below with the measurement replaced)."""
    import torch

    from peftlab import PromptEncoderConfig, get_peft_model
    from peftlab.workbook import load_base_model, load_task
    base, tokenizer = load_base_model()
    torch.manual_seed(0)
    model = get_peft_model(base, PromptEncoderConfig(num_virtual_tokens=4, encoder_hidden_size=32))
    return model, tokenizer, list(load_task("capitals")["test"])[:6]


def fake_scores(monkeypatch, values):
    monkeypatch.setattr(nb09, "order_scores", lambda model, tokenizer, rows: dict(values))


@pytest.mark.parametrize("prediction, measured",
                         [(None, None), (True, None), (None, {"trained order": 0.8, "reversed": 0.1})])
def test_token_order_not_attempted(prediction, measured, capsys):
    assert not nb09.check_token_order(prediction, measured, None, None, None)
    assert "not attempted" in capsys.readouterr().out


def test_token_order_judges_the_prediction_against_the_measurement(monkeypatch, capsys):
    drop = {"trained order": 0.8, "reversed": 0.2}
    fake_scores(monkeypatch, drop)
    assert nb09.check_token_order(False, drop, None, None, None)
    assert "order matters" in last_line(capsys)
    assert not nb09.check_token_order(True, drop, None, None, None)
    out = last_line(capsys)
    assert "'a drop', not 'about the same'" in out and "order matters" in out
    same = {"trained order": 0.8, "reversed": 0.75}
    fake_scores(monkeypatch, same)
    assert nb09.check_token_order(True, same, None, None, None)
    assert "barely mattered" in last_line(capsys)
    assert not nb09.check_token_order(False, same, None, None, None)
    assert "barely mattered" in last_line(capsys)


@pytest.mark.parametrize("measured, same", [
    ({"trained order": 0.5, "reversed": 0.6}, True),      # a gain of 0.1 counts as the same
    ({"trained order": 0.775, "reversed": 0.675}, True),  # a drop of 4 in 40 too
    ({"trained order": 0.5, "reversed": 0.7}, False),     # a gain of 0.2 does not
])
def test_token_order_the_tolerance_is_inclusive_and_two_sided(measured, same, monkeypatch, capsys):
    fake_scores(monkeypatch, measured)
    assert nb09.check_token_order(same, measured, None, None, None)
    capsys.readouterr()


def test_token_order_numbers_that_were_not_measured_are_refused(untrained_prompt, capsys):
    model, tokenizer, rows = untrained_prompt
    truth = nb09.order_scores(model, tokenizer, rows)
    assert nb09.check_token_order(abs(truth["trained order"] - truth["reversed"]) <= 0.1, truth, model, tokenizer, rows)
    typed = {"trained order": 0.725, "reversed": 0.2}
    assert not nb09.check_token_order(False, typed, model, tokenizer, rows)
    assert "measured again on this model" in last_line(capsys)


def test_reversing_the_prompt_flips_its_rows_and_leaves_the_model_alone(untrained_prompt):
    model, _, _ = untrained_prompt
    table = model.prompt_encoder["default"].embedding.weight
    flipped = nb09.reversed_prompt(model).prompt_encoder["default"].embedding.weight
    assert torch_equal(flipped, table.flip(0)) and not torch_equal(flipped, table)


def torch_equal(a, b) -> bool:
    import torch
    return torch.equal(a, b)


def test_prompt_transfer_is_measured_again_and_judged(untrained_prompt, capsys):
    model, tokenizer, rows = untrained_prompt
    assert not nb09.check_prompt_transfer(None, None, model, tokenizer, rows)
    assert "not attempted" in capsys.readouterr().out
    assert not nb09.check_prompt_transfer("yes", {"probe": 0.5, "new query": 0.1}, model, tokenizer, rows)
    assert "predict True" in last_line(capsys)
    assert not nb09.check_prompt_transfer(True, {"probe": 0.5}, model, tokenizer, rows)
    assert "measure both" in last_line(capsys)
    assert not nb09.check_prompt_transfer(True, {"probe": 0.725, "new query": 0.25}, model, tokenizer, rows)
    assert "measured again on this model" in last_line(capsys)
    reworded = [{"prompt": nb09.TRANSFER_QUERY.format(c=r["country"]), "target": r["target"]} for r in rows]
    from peftlab.workbook.evaluate import exact_match
    truth = {"probe": exact_match(model, tokenizer, rows), "new query": exact_match(model, tokenizer, reworded)}
    kept = truth["new query"] >= truth["probe"] / 2
    assert nb09.check_prompt_transfer(kept, truth, model, tokenizer, rows)
    assert not nb09.check_prompt_transfer(not kept, truth, model, tokenizer, rows)
    wrong = last_line(capsys)
    assert "not 'kept half'" in wrong or "not 'lost more than half'" in wrong


@pytest.mark.parametrize("prediction, measured, hint", [
    ("yes", {"trained order": 0.8, "reversed": 0.2}, "predict True"),
    (True, {"trained": 0.8, "reversed": 0.2}, "measure both"),
    (True, [0.8, 0.2], "measure both"),
    (True, {"trained order": 80, "reversed": 20}, "between 0 and 1"),
])
def test_token_order_malformed_answers_say_what_to_fix(prediction, measured, hint, capsys):
    assert not nb09.check_token_order(prediction, measured, None, None, None)
    assert hint in last_line(capsys)


# --------------------------------------------------------------------------- 10


@pytest.fixture(scope="module")
def two_small_prompts():
    """Untrained 1,024-number deep and shallow prompts on the 1M model, and 8 records test rows."""
    import torch

    from peftlab import PrefixTuningConfig, PromptTuningConfig, get_peft_model
    from peftlab.workbook import load_base_model, load_task
    torch.manual_seed(0)
    models = {}
    for name, config in (("deep P=2", PrefixTuningConfig(num_virtual_tokens=2)),
                         ("shallow P=8", PromptTuningConfig(num_virtual_tokens=8))):
        base, tokenizer = load_base_model()
        models[name] = get_peft_model(base, config)
    return models, tokenizer, list(load_task("records")["test"])[:8]


def fake_losses(monkeypatch, losses):
    monkeypatch.setattr(nb10, "records_test_loss", lambda model, tokenizer, rows: losses[model])


def test_depth_or_length_not_attempted(capsys):
    assert not nb10.check_depth_or_length(None, None, None, None, None)
    assert not nb10.check_depth_or_length("deep P=2", None, None, None, None)
    assert "not attempted" in capsys.readouterr().out


def test_depth_or_length_judges_the_prediction_against_the_measurement(two_small_prompts, monkeypatch, capsys):
    models, tokenizer, rows = two_small_prompts
    deep_wins = {"deep P=2": 1.4, "shallow P=8": 1.8}
    fake_losses(monkeypatch, {models[k]: v for k, v in deep_wins.items()})
    assert nb10.check_depth_or_length("deep P=2", deep_wins, models, tokenizer, rows)
    assert "Depth pays most when the budget of numbers is small" in last_line(capsys)
    assert not nb10.check_depth_or_length("shallow P=8", deep_wins, models, tokenizer, rows)
    assert "'deep P=2', not 'shallow P=8'" in last_line(capsys)
    shallow_wins = {"deep P=2": 1.9, "shallow P=8": 1.8}
    fake_losses(monkeypatch, {models[k]: v for k, v in shallow_wins.items()})
    assert nb10.check_depth_or_length("shallow P=8", shallow_wins, models, tokenizer, rows)
    assert "too few" in last_line(capsys)
    assert not nb10.check_depth_or_length("deep P=2", deep_wins, models, tokenizer, rows)
    assert "measured again on these models" in last_line(capsys)


def test_depth_or_length_measures_the_real_models_again(two_small_prompts, capsys):
    models, tokenizer, rows = two_small_prompts
    truth = {k: nb10.records_test_loss(m, tokenizer, rows) for k, m in models.items()}
    assert nb10.check_depth_or_length(min(truth, key=truth.get), truth, models, tokenizer, rows)
    assert not nb10.check_depth_or_length("deep P=2", {k: v + 0.1 for k, v in truth.items()}, models, tokenizer, rows)
    assert "measured again" in last_line(capsys)


@pytest.mark.parametrize("prediction, measured, hint", [
    ("deep", {"deep P=2": 1.4, "shallow P=8": 1.8}, "predict one of"),
    ("deep P=2", {"deep P=2": 1.4}, "measure the test loss of both"),
    ("deep P=2", {"deep P=2": 1.4, "shallow P=8": -1.0}, "positive number"),
    ("deep P=2", {"deep P=2": "1.4", "shallow P=8": 1.8}, "positive number"),
    ("deep P=2", {"deep P=2": 1.4, "shallow P=8": 1.8}, "pass the two trained models"),
])
def test_depth_or_length_malformed_answers_say_what_to_fix(prediction, measured, hint, capsys):
    assert not nb10.check_depth_or_length(prediction, measured, None, None, None)
    assert hint in last_line(capsys)


def history(lr: float, losses: list[float]):
    from peftlab.workbook.training import History
    return History(steps=list(range(1, len(losses) + 1)), loss=losses, lr=[lr] * len(losses))


MLP_FINAL = {"MLP reparameterised": [1.32, 1.314, 1.352]}


def test_mlp_or_rate_checks_the_runs_and_judges(capsys):
    assert not nb10.check_mlp_or_rate(None, None, MLP_FINAL)
    assert "not attempted" in capsys.readouterr().out
    erratic = [history(1e-2, [8.0] * 40), history(1e-2, [7.0] * 40), history(1e-2, [8.5] * 40)]
    assert nb10.check_mlp_or_rate("the MLP", erratic, MLP_FINAL)
    assert "hardly trains" in last_line(capsys)
    assert not nb10.check_mlp_or_rate("the rate", erratic, MLP_FINAL)
    assert "'the MLP', not 'the rate'" in last_line(capsys)
    steady = [history(1e-2, [1.33] * 40), history(1e-2, [1.35] * 40), history(1e-2, [1.34] * 40)]
    assert nb10.check_mlp_or_rate("the rate", steady, MLP_FINAL)
    assert not nb10.check_mlp_or_rate("the MLP", [history(5e-2, [1.3] * 40)] * 3, MLP_FINAL)
    assert "peak rate of 0.01" in last_line(capsys)
    assert not nb10.check_mlp_or_rate("the MLP", [history(1e-2, [1.3] * 20)] * 3, MLP_FINAL)
    assert "40 steps" in last_line(capsys)
    assert not nb10.check_mlp_or_rate("the MLP", erratic[:2], MLP_FINAL)
    assert "three training histories" in last_line(capsys)
    assert not nb10.check_mlp_or_rate("MLP", erratic, MLP_FINAL)
    assert "predict one of" in last_line(capsys)
