"""What is LoRA's own on convolutions: the kernel read as a matrix, peft's layout, dilation, DoRA with
dropout, what is refused and why. (The shared invariants run on the "cnn" and "vit" rows of
conformance_rows.py, peft round trips included.)"""
import peft
import pytest
import torch
from lora_testutils import one_thread, perturb  # noqa: F401 (autouse fixture)
from torch import nn

import peftlab
from peftlab import LoraConfig, get_peft_model
from peftlab.tuners.lora import LoraConv

CONVS = {1: (nn.Conv1d, (2, 4, 9)), 2: (nn.Conv2d, (2, 4, 9, 7)), 3: (nn.Conv3d, (2, 4, 5, 6, 5))}


class OneConv(nn.Module):
    def __init__(self, dims: int, **options):
        super().__init__()
        self.conv = CONVS[dims][0](4, 6, 3, **options)

    def forward(self, x):
        return self.conv(x)


def one_conv(dims, seed=0, **options):
    torch.manual_seed(seed)
    return OneConv(dims, **options).eval()


def image(dims, seed=1):
    return torch.randn(CONVS[dims][1], generator=torch.Generator().manual_seed(seed))


OPTIONS = [{}, {"padding": 1}, {"stride": 2, "padding": 1}, {"padding": "same", "dilation": 2}, {"bias": False}]


@pytest.mark.parametrize("options", OPTIONS, ids=str)
@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("dora", [False, True])
def test_the_update_is_a_change_of_the_kernel_so_merging_is_exact(dims, options, dora):
    model = get_peft_model(one_conv(dims, **options), LoraConfig(r=2, lora_alpha=4, target_modules=["conv"],
                                                                 use_dora=dora))
    perturb(model)
    layer, x = model.get_base_model().conv, image(dims)
    assert isinstance(layer, LoraConv)
    assert layer.lora_A["default"].dilation == layer.base_layer.dilation        # A sees what the base sees
    assert layer.lora_B["default"].kernel_size == (1,) * dims                   # B mixes channels only
    unmerged = model(x)
    if not dora:   # LoRA's output is the base kernel plus s B A, folded back into a kernel
        kernel = layer.base_layer.weight + layer.get_delta_weight("default").view_as(layer.base_layer.weight)
        expected = layer.base_layer._conv_forward(x, kernel, layer.base_layer.bias)
        torch.testing.assert_close(unmerged, expected, rtol=0, atol=1e-5)
    plain = model.merge_and_unload()
    assert type(plain.conv) is CONVS[dims][0]
    torch.testing.assert_close(plain(x), unmerged, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_factors_have_peft_layout_and_dora_magnitude_its_shape(dims, tmp_path):
    ours = get_peft_model(one_conv(dims, padding=1), LoraConfig(r=2, target_modules=["conv"], use_dora=True))
    perturb(ours)
    theirs = peft.get_peft_model(one_conv(dims, padding=1), peft.LoraConfig(r=2, target_modules=["conv"],
                                                                               use_dora=True))
    mine = {k: t.shape for k, t in peftlab.get_peft_model_state_dict(ours).items()}
    assert mine == {k: t.shape for k, t in peft.get_peft_model_state_dict(theirs).items()}
    assert mine["base_model.model.conv.lora_magnitude_vector"] == (1, 6) + (1,) * dims
    ours.eval().save_pretrained(tmp_path)
    loaded = peft.PeftModel.from_pretrained(one_conv(dims, padding=1), tmp_path).eval()
    torch.testing.assert_close(loaded(image(dims)), ours(image(dims)), rtol=0, atol=1e-5)


def test_dora_with_dropout_recomputes_the_convolution_of_the_dropped_input():
    model = get_peft_model(one_conv(2, padding=1), LoraConfig(r=2, target_modules=["conv"], use_dora=True,
                                                              lora_dropout=0.5))
    perturb(model)
    layer, x = model.get_base_model().conv, image(2)
    model.train()
    torch.manual_seed(3)
    out = model(x)
    torch.manual_seed(3)   # the same dropout mask, applied by hand: W' = m (W + s B A) / ||W + s B A||
    dropped = layer.lora_dropout["default"](x)
    with torch.no_grad():
        W, s = layer.get_base_weight(), layer.scaling["default"]
        adapted = W + layer.get_delta_weight("default")
        m = layer.lora_magnitude_vector["default"].reshape(-1)
        scale = (m / adapted.norm(dim=1)).view(-1, 1, 1)
        expected = (layer.base_layer(x) + (scale - 1) * layer.apply_matrix(dropped, W)
                    + scale * s * layer.lora_B["default"](layer.lora_A["default"](dropped)))
    torch.testing.assert_close(out.detach(), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("options,message", [({"groups": 2}, "grouped convolution"),
                                             ({"padding": 1, "padding_mode": "reflect"}, "zero padding only")])
def test_convolutions_that_are_not_one_matrix_are_refused_and_the_model_is_untouched(options, message):
    base = one_conv(2, **options)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        get_peft_model(base, LoraConfig(r=2, target_modules=["conv"]))
    assert type(base.conv) is nn.Conv2d and all(torch.equal(base.state_dict()[k], v) for k, v in before.items())


def test_pissa_and_methods_without_convolutions_say_so():
    with pytest.raises(ValueError, match="PiSSA.*convolution"):
        get_peft_model(one_conv(2), LoraConfig(r=2, target_modules=["conv"], init_lora_weights="pissa"))
    with pytest.raises(ValueError, match="it is a Conv2d, and IA3 wraps only nn.Linear"):
        get_peft_model(one_conv(2), peftlab.IA3Config(target_modules=["conv"], feedforward_modules=[]))


def test_loraplus_finds_the_b_kernels_of_convolutions():
    model = get_peft_model(one_conv(2), LoraConfig(r=2, target_modules=["conv"]))
    slow, fast = peftlab.create_loraplus_param_groups(model, lr=1e-3)
    layer = model.get_base_model().conv
    assert fast["params"] == [layer.lora_B["default"].weight] and slow["params"] == [layer.lora_A["default"].weight]


def test_cat_combination_of_conv_adapters_is_the_exact_sum():
    model = get_peft_model(one_conv(2, padding=1), LoraConfig(r=2, lora_alpha=4, target_modules=["conv"]))
    model.add_adapter("other", LoraConfig(r=3, lora_alpha=3, target_modules=["conv"]))
    perturb(model)
    for name in ("default", "other"):
        for p in model.get_base_model().conv.lora_B[name].parameters():
            p.data.add_(0.1)
    model.add_weighted_adapter(["default", "other"], [0.5, -1.0], "both", combination_type="cat")
    layer = model.get_base_model().conv
    expected = 0.5 * layer.get_delta_weight("default") - layer.get_delta_weight("other")
    torch.testing.assert_close(layer.get_delta_weight("both"), expected, rtol=0, atol=1e-6)
    assert layer.lora_A["both"].weight.shape == (5, 4, 3, 3)
