"""Notebook 17's checkers: 'not attempted' for the stubs, True for right answers, a hint naming what is
wrong otherwise; the capstone's grader names the invariant a method breaks."""
import pytest
import torch
from torch import nn

from peftlab.course.exercises import nb17_build_a_method as nb17
from peftlab.tuners.fourierft import FourierFTModel
from peftlab.tuners.hra import HRALayer, HRAModel
from peftlab.tuners.lora import LoraModel
from peftlab.workbook.runtime import one_thread

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:peft.*", "ignore::FutureWarning")


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    with one_thread():
        yield


def last_line(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


class LearnersHRA(HRAModel):
    """A learner's class that is right (the library's math, defined outside the library)."""


class LearnersFourierFT(FourierFTModel):
    pass


class SameOrderUndo(HRALayer):
    def unmerge_weights(self, name, weight, bias):
        return self.reflect(weight, name), bias


class LearnersBrokenHRA(HRAModel):
    layers = {nn.Linear: SameOrderUndo}


def test_my_method_untouched_is_not_attempted(capsys):
    assert not nb17.check_my_method(None)
    assert "not attempted" in last_line(capsys)


@pytest.mark.parametrize("method", [LearnersHRA, LearnersFourierFT])
def test_a_right_method_passes_every_invariant_and_peft(method, capsys):
    assert nb17.check_my_method(method)
    out = capsys.readouterr().out
    assert out.count("\u2713") == 9 and "peft reads its folders" in out


def test_a_broken_method_is_told_which_invariant_fails_and_what_it_means(capsys):
    assert not nb17.check_my_method(LearnersBrokenHRA)
    line = last_line(capsys)
    assert "'unmerge restores' fails" in line and "reverse order" in line


@pytest.mark.parametrize("given,hint", [
    (HRALayer, "pass the tuner class itself"), (HRAModel, "the library's own class"),
    (type("Mine", (LoraModel,), {}), "HRAConfig or FourierFTConfig")])
def test_what_is_not_a_learners_hra_or_fourierft_class_is_refused_with_a_hint(given, hint, capsys):
    assert not nb17.check_my_method(given)
    assert hint in last_line(capsys)


def test_oft_parameters(capsys):
    assert not nb17.check_oft_parameters(None)
    assert "not attempted" in last_line(capsys)
    assert nb17.check_oft_parameters(128 * 32 * 31 // 2)
    for wrong, hint in [(128 * 32 * 32, "above its diagonal"), (128 * 32 * 31, "both triangles"),
                        (4096 * 4095 // 2, "one rotation of all 4096"), (32 * 31 // 2, "that is one block"),
                        (12345, "number of blocks")]:
        assert not nb17.check_oft_parameters(wrong)
        assert hint in last_line(capsys)


def test_fourierft_rank_is_judged_against_the_measurement(capsys):
    assert not nb17.check_fourierft_rank(None, None)
    assert not nb17.check_fourierft_rank("128", None)
    assert "not attempted" in last_line(capsys)
    truth = nb17.fourierft_rank()
    assert truth == 128, "896 waves span all 128 dimensions of q_proj"
    assert nb17.check_fourierft_rank("128", truth)
    assert nb17.check_fourierft_rank("128", torch.tensor(truth))
    assert not nb17.check_fourierft_rank("at most 4", truth)
    assert "'128', not 'at most 4'" in last_line(capsys)
    assert not nb17.check_fourierft_rank("maybe", truth)
    assert "predict one of" in last_line(capsys)
    assert not nb17.check_fourierft_rank("128", 4)
    assert "the rank is 128" in last_line(capsys)
