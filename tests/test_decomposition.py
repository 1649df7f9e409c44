"""peftlab/workbook/decomposition.py: the weight a layer applies, and how far its rows moved in length and direction."""
import math

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from peftlab import LoraConfig, get_peft_model
from peftlab.workbook.decomposition import effective_weight, fit_line, magnitude_direction_change


def test_effective_weight_is_the_weight_of_a_linear_layer_and_of_gpt2s_transposed_conv1d():
    torch.manual_seed(0)
    linear, conv = nn.Linear(6, 4), Conv1D(4, 6)            # Conv1D(nf=out, nx=in) stores (in, out)
    nn.init.normal_(conv.bias)
    torch.testing.assert_close(effective_weight(linear), linear.weight.detach())
    torch.testing.assert_close(effective_weight(conv), conv.weight.detach().T)


@pytest.mark.parametrize("use_dora", [False, True])
def test_effective_weight_of_an_adapted_layer_is_what_merging_writes_with_dropout_off(use_dora):
    torch.manual_seed(0)
    model = get_peft_model(nn.Sequential(nn.Linear(8, 5)), LoraConfig(
        r=2, target_modules=["0"], init_lora_weights=False, lora_dropout=0.5, use_dora=use_dora))
    layer = model.base_model.model[0]
    model.train()
    frozen = layer.base_layer.weight.detach().clone()
    seen = effective_weight(layer)
    assert layer.training, "the layer's mode is restored"
    merged = model.merge_and_unload()[0].weight.detach()
    torch.testing.assert_close(seen, merged, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(seen, frozen)


def test_magnitude_and_direction_changes_separate_scaling_from_rotation():
    torch.manual_seed(0)
    W = torch.randn(4, 3)
    delta_m, delta_d = magnitude_direction_change(W, 3 * W)
    assert delta_d == pytest.approx(0, abs=1e-12) and delta_m == pytest.approx(2 * float(W.norm(dim=1).mean()))
    angle = math.pi / 3
    rotation = torch.tensor([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
    rows = torch.tensor([[1.0, 0, 0], [0, 2.0, 0]])
    delta_m, delta_d = magnitude_direction_change(rows, rows @ rotation.T)
    assert delta_m == pytest.approx(0, abs=1e-6) and delta_d == pytest.approx(1 - math.cos(angle))
    with pytest.raises(ValueError, match="differ in shape"):
        magnitude_direction_change(W, W.T)


def test_fit_line_gives_slope_and_correlation():
    slope, corr = fit_line([0.0, 1.0, 2.0, 3.0], [1.0, -1.0, -3.0, -5.0])
    assert slope == pytest.approx(-2) and corr == pytest.approx(-1)
    slope, corr = fit_line([0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 0.0, 1.0])
    assert 0 < corr < 1 and slope == pytest.approx(0.2)
    with pytest.raises(ValueError, match="at least 3"):
        fit_line([0.0, 1.0], [1.0, 2.0])
