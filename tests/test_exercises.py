"""Exercise checkers: 'not attempted' for the stubs, True for right answers, a hint for wrong ones."""
import pytest

from peftlab import load_base_model
from peftlab.exercises import nb00_welcome, nb01_full_finetuning as nb01


@pytest.fixture(scope="module")
def model():
    return load_base_model()[0]


def stub(_):
    raise NotImplementedError


def test_parameter_count(model, capsys):
    assert not nb00_welcome.check_parameter_count(None, model)
    assert "not attempted" in capsys.readouterr().out
    n = sum(p.numel() for p in model.parameters())
    assert nb00_welcome.check_parameter_count(n, model)
    assert not nb00_welcome.check_parameter_count(n + model.lm_head.weight.numel(), model)
    assert "twice" in capsys.readouterr().out


def test_memory_7b(capsys):
    assert not nb01.check_memory_7b(None)
    assert nb01.check_memory_7b(7e9 * 16 / 2**30)
    assert not nb01.check_memory_7b(7e9 * 16 / 1e9)
    assert "GiB" in capsys.readouterr().out.splitlines()[-1]
    assert not nb01.check_memory_7b(7e9 * 4 / 2**30)


def test_freeze_all_but_last_layer(model, capsys):
    assert not nb01.check_freeze_all_but_last_layer(stub, model)
    assert "not attempted" in capsys.readouterr().out

    def right(m):
        m.requires_grad_(False)
        m.model.layers[-1].requires_grad_(True)
        m.model.norm.requires_grad_(True)

    def forgot_norm(m):
        m.requires_grad_(False)
        m.model.layers[-1].requires_grad_(True)

    assert nb01.check_freeze_all_but_last_layer(right, model)
    assert not nb01.check_freeze_all_but_last_layer(forgot_norm, model)
    assert all(p.requires_grad for p in model.parameters()), "the checker must work on a copy"


def test_adam_state_bytes(model, capsys):
    assert not nb01.check_adam_state_bytes(stub, model)
    assert "not attempted" in capsys.readouterr().out
    everything = lambda opt: sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values())
    moments = lambda opt: sum(t.numel() * t.element_size() for s in opt.state.values()
                              for k, t in s.items() if k != "step")
    assert nb01.check_adam_state_bytes(moments, model)
    assert not nb01.check_adam_state_bytes(everything, model)
    assert "step" in capsys.readouterr().out.splitlines()[-1]
