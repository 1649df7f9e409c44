"""Exercise checkers for notebook 10 (prefix tuning): stub -> not attempted, right -> True, wrong -> a hint."""
from peftlab.course.exercises import NOT_ATTEMPTED
from peftlab.course.exercises import nb10_prefix_tuning as nb10


def test_parameter_count_checker(capsys):
    assert not nb10.check_prefix_parameter_count(None)
    assert NOT_ATTEMPTED in capsys.readouterr().out
    assert nb10.check_prefix_parameter_count(32 * 2 * 10 * 8 * 128)
    capsys.readouterr()
    assert not nb10.check_prefix_parameter_count(32 * 2 * 10 * 32 * 128)
    assert "key/value heads" in capsys.readouterr().out
    assert not nb10.check_prefix_parameter_count(32 * 10 * 8 * 128)
    assert "times 2" in capsys.readouterr().out
