"""The predict-then-run checkers of notebooks 09 and 10: 'not attempted' for the stubs, True when the
prediction matches the learner's own measurement, a lesson either way, and a clear message (never an
exception) for a malformed answer. (Their other checkers: tests/test_nb09_helpers.py, test_nb10_helpers.py.)"""
import pytest

from peftlab.course.exercises import nb09_p_tuning as nb09
from peftlab.course.exercises import nb10_prefix_tuning as nb10


def last_line(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


# --------------------------------------------------------------------------- 09


@pytest.mark.parametrize("prediction, measured",
                         [(None, None), (True, None), (None, {"trained order": 0.8, "reversed": 0.1})])
def test_token_order_not_attempted(prediction, measured, capsys):
    assert not nb09.check_token_order(prediction, measured)
    assert "not attempted" in capsys.readouterr().out


def test_token_order_judges_the_prediction_against_the_measurement(capsys):
    drop = {"trained order": 0.8, "reversed": 0.2}
    assert nb09.check_token_order(False, drop)
    assert "order matters" in last_line(capsys)
    assert not nb09.check_token_order(True, drop)
    out = last_line(capsys)
    assert "you predicted about the same" in out and "order matters" in out
    same = {"trained order": 0.8, "reversed": 0.75}
    assert nb09.check_token_order(True, same)
    assert "barely mattered" in last_line(capsys)
    assert not nb09.check_token_order(False, same)
    assert "barely mattered" in last_line(capsys)


def test_token_order_the_tolerance_is_inclusive_and_two_sided(capsys):
    assert nb09.check_token_order(True, {"trained order": 0.5, "reversed": 0.6})     # a gain of 0.1 counts as the same
    assert nb09.check_token_order(True, {"trained order": 0.775, "reversed": 0.675})  # a drop of 4 in 40 too
    assert nb09.check_token_order(False, {"trained order": 0.5, "reversed": 0.7})    # a gain of 0.2 does not
    capsys.readouterr()


@pytest.mark.parametrize("prediction, measured, hint", [
    ("yes", {"trained order": 0.8, "reversed": 0.2}, "predict True"),
    (True, {"trained": 0.8, "reversed": 0.2}, "measure both"),
    (True, [0.8, 0.2], "measure both"),
    (True, {"trained order": 80, "reversed": 20}, "between 0 and 1"),
])
def test_token_order_malformed_answers_say_what_to_fix(prediction, measured, hint, capsys):
    assert not nb09.check_token_order(prediction, measured)
    assert hint in last_line(capsys)


# --------------------------------------------------------------------------- 10


def test_depth_or_length_not_attempted(capsys):
    assert not nb10.check_depth_or_length(None, None)
    assert not nb10.check_depth_or_length("deep P=2", None)
    assert "not attempted" in capsys.readouterr().out


def test_depth_or_length_judges_the_prediction_against_the_measurement(capsys):
    deep_wins = {"deep P=2": 1.4, "shallow P=8": 1.8}
    assert nb10.check_depth_or_length("deep P=2", deep_wins)
    assert "where the numbers sit" in last_line(capsys)
    assert not nb10.check_depth_or_length("shallow P=8", deep_wins)
    out = last_line(capsys)
    assert "the lower is 'deep P=2'" in out and "where the numbers sit" in out
    shallow_wins = {"deep P=2": 1.9, "shallow P=8": 1.8}
    assert nb10.check_depth_or_length("shallow P=8", shallow_wins)
    assert "too few" in last_line(capsys)
    assert not nb10.check_depth_or_length("deep P=2", shallow_wins)
    assert "the lower is 'shallow P=8'" in last_line(capsys)


@pytest.mark.parametrize("prediction, measured, hint", [
    ("deep", {"deep P=2": 1.4, "shallow P=8": 1.8}, "predict one of"),
    ("deep P=2", {"deep P=2": 1.4}, "measure the test loss of both"),
    ("deep P=2", {"deep P=2": 1.4, "shallow P=8": -1.0}, "positive number"),
    ("deep P=2", {"deep P=2": "1.4", "shallow P=8": 1.8}, "positive number"),
])
def test_depth_or_length_malformed_answers_say_what_to_fix(prediction, measured, hint, capsys):
    assert not nb10.check_depth_or_length(prediction, measured)
    assert hint in last_line(capsys)
