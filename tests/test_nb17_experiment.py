"""Notebook 17's comparison (peftlab/course/experiments/nb17_rotations.py): the stored results are the experiment
the script defines, and its geometry measure reads a merged adapter without changing the model."""
import copy

import pytest
import torch

from peftlab import get_peft_model
from peftlab.course.experiments import nb17_rotations
from peftlab.course.experiments.protocol import grew_from, is_interior, load_results
from peftlab.workbook import load_base_model
from peftlab.workbook.runtime import one_thread

MEASURED = ("ranked recall", "perplexity", "spectrum change", "angle change")


@pytest.fixture(scope="module")
def base():
    with one_thread():
        yield load_base_model()[0]


def trained_looking(base, config):
    model = get_peft_model(copy.deepcopy(base), config)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def test_the_stored_comparison_is_the_one_defined():
    stored = load_results("nb17_rotations")
    settings, script = stored["settings"], nb17_rotations.SETTINGS
    assert settings["seeds"] == list(script["seeds"]) and len(script["seeds"]) >= 5
    assert (settings["base_model"], settings["task"], settings["steps"], settings["batch_size"]) == (
        script["base_name"], script["task_name"], script["steps"], script["batch_size"])
    assert settings["n_heldout"] == nb17_rotations.N_HELDOUT and set(stored["base"]) == {"ranked recall", "perplexity"}
    assert list(stored["rows"]) == list(nb17_rotations.METHODS)
    for name, row in stored["rows"].items():
        assert grew_from(row, nb17_rotations.METHODS[name].lrs) and is_interior(row)
        assert all(len(row[key]) == len(settings["seeds"]) for key in ("test", *MEASURED))


def test_the_budget_is_about_seven_thousand_numbers_by_each_method_s_formula(base):
    formula = {"LoRA r=4": 4 * (4 * (128 + 128) + 4 * (128 + 64)), "OFT b=16": 8 * 128 * 15 // 2,
               "HRA r=8": 8 * 8 * 128, "FourierFT n=896": 8 * 896}
    stored = load_results("nb17_rotations")["rows"]
    for name, method in nb17_rotations.METHODS.items():
        model = get_peft_model(copy.deepcopy(base), method.config())
        trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert trained == formula[name] == stored[name]["trainable"]


def test_merged_weights_leave_the_model_as_it_was(base):
    model = trained_looking(base, nb17_rotations.hra())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pairs = nb17_rotations.merged_weights(model)
    assert len(pairs) == 8 and all(w.shape == m.shape and not torch.equal(w, m) for w, m in pairs.values())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert not any(layer.merged_adapters for layer in model.base_model.adapter_layers())


@pytest.mark.parametrize("config,rotates", [(nb17_rotations.oft, True), (nb17_rotations.hra, True),
                                            (nb17_rotations.lora, False), (nb17_rotations.fourierft, False)])
def test_a_rotation_keeps_the_spectrum_and_the_angles_and_an_addition_moves_them(base, config, rotates):
    changes = nb17_rotations.geometry_change(trained_looking(base, config()))
    assert set(changes) == {"spectrum change", "angle change"}
    if rotates:
        assert max(changes.values()) < 1e-5
    else:
        assert min(changes.values()) > 1e-3


def test_row_cosines_are_one_on_the_diagonal_and_see_no_row_s_length():
    weight = torch.randn(5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    scaled = weight * torch.arange(1, 6, dtype=torch.float64)[:, None]
    torch.testing.assert_close(nb17_rotations.row_cosines(weight).diagonal(), torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(nb17_rotations.row_cosines(scaled), nb17_rotations.row_cosines(weight))
