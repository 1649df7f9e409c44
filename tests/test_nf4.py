"""NF4 (peftlab/nf4.py) against the QLoRA paper's table and against bitsandbytes (the oracle, on CPU):
levels, blockwise absmax, double quantization, bits per weight, Linear4bit, quantize_model."""
import copy

import bitsandbytes.functional as bnb
import pytest
import torch
from lora_testutils import build, inputs, one_thread, output, perturb  # noqa: F401 (autouse fixture)

import peftlab
from peftlab.nf4 import NF4_LEVELS, Linear4bit, nearest_level, pack, quantize_model, quantize_nf4, unpack
from peftlab.workbook.memory import stored_bytes

pytestmark = pytest.mark.filterwarnings("ignore:Failed to load CPU gemm_4bit:UserWarning",
                                        "ignore::FutureWarning:transformers.*")

# The NF4 data type as published (Dettmers et al. 2023, Appendix E): data to check against, not a source.
PUBLISHED_NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
                 -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
                 0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                 0.7229568362236023, 1.0]


def weights(shape=(256, 384), seed=0, scale=0.05):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


def test_the_levels_computed_from_normal_quantiles_are_the_published_table():
    torch.testing.assert_close(NF4_LEVELS, torch.tensor(PUBLISHED_NF4), rtol=0, atol=1e-6)
    assert (NF4_LEVELS > 0).sum() == 8 and (NF4_LEVELS < 0).sum() == 7 and (NF4_LEVELS == 0).sum() == 1


def test_codes_are_the_nearest_level_and_pack_two_per_byte():
    x = torch.linspace(-1, 1, 1001)
    codes = nearest_level(x, NF4_LEVELS)
    assert torch.equal(codes.long(), (x[:, None] - NF4_LEVELS).abs().argmin(dim=1))
    packed = pack(codes)
    assert packed.dtype == torch.uint8 and packed.numel() == 501
    assert torch.equal(unpack(packed, 1001), codes.long())


@pytest.mark.parametrize("shape", [(256, 384), (100, 30)])   # the second does not fill its last block
def test_dequantized_weights_equal_bitsandbytes(shape):
    w = weights(shape)
    ours = quantize_nf4(w, block_size=64).dequantize()
    packed, state = bnb.quantize_4bit(w, blocksize=64, quant_type="nf4")
    torch.testing.assert_close(ours, bnb.dequantize_4bit(packed, state), rtol=0, atol=1e-6)


def test_double_quantization_errs_like_bitsandbytes_and_costs_4_127_bits():
    w = weights()
    single, double = quantize_nf4(w), quantize_nf4(w, double_quant=True)
    packed, state = bnb.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
    ours_error = (double.dequantize() - w).abs().mean()
    theirs_error = (bnb.dequantize_4bit(packed, state) - w).abs().mean()
    assert abs(ours_error / theirs_error - 1) < 0.02
    assert single.bits_per_weight == pytest.approx(4 + 32 / 64)                       # 4.5
    assert double.bits_per_weight == pytest.approx(4 + 8 / 64 + 32 / (64 * 256), abs=2e-3)   # 4.127 (+ one mean)
    assert double.nbytes < single.nbytes < w.numel() * w.element_size() / 7


def test_linear4bit_computes_with_its_dequantized_weight_and_counts_real_weights():
    linear = torch.nn.Linear(384, 256)
    with torch.no_grad():
        linear.weight.copy_(weights())
    layer = Linear4bit(linear)
    x = torch.randn(3, 384)
    torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, layer.dequantize(), linear.bias))
    assert layer.weight.dtype == torch.uint8 and not layer.weight.requires_grad
    assert peftlab.parameter_counts(layer)["total"] == 256 * 384 + 256               # weights, not bytes
    assert "NF4 in blocks of 64, double quantization" in repr(layer)


def test_quantize_model_swaps_the_linear_layers_and_reports_real_bytes():
    model = build("gpt2")
    report = quantize_model(model)
    assert report["layers"] == 2 * 4                                                  # Conv1D layers; lm_head stays
    assert isinstance(model.lm_head, torch.nn.Linear) and isinstance(model.transformer.wte, torch.nn.Embedding)
    assert report["bytes_after"] == stored_bytes(model) < report["bytes_before"]
    assert peftlab.parameter_counts(model)["total"] == peftlab.parameter_counts(build("gpt2"))["total"]
    error = (output(model, "gpt2") - output(build("gpt2"), "gpt2")).abs().max()
    assert 0 < error < 1.0                                                              # close, not equal


def test_qlora_adapter_loads_onto_the_float_base_and_in_peft(tmp_path):
    """An adapter trained on the 4-bit base has the float base's keys and shapes: peft loads it too."""
    import peft
    base = build("llama")
    quantize_model(base)
    qlora = peftlab.get_peft_model(base, peftlab.LoraConfig(r=4, target_modules="all-linear"))
    assert sum(isinstance(m, Linear4bit) for m in qlora.modules()) == 2 * 7
    perturb(qlora)
    qlora.save_pretrained(tmp_path)
    on_float = peftlab.PeftModel.from_pretrained(build("llama"), tmp_path)
    in_peft = peft.PeftModel.from_pretrained(build("llama"), tmp_path)
    torch.testing.assert_close(output(in_peft, "llama"), output(on_float, "llama"), rtol=0, atol=1e-5)
    gap = (output(on_float, "llama") - output(qlora.eval(), "llama")).abs().max()
    assert gap < 1.0   # the same adapter on float weights: close to the 4-bit model, not equal


def test_merging_a_4bit_layer_gives_a_float_layer_and_unmerging_the_4bit_one_back():
    model = copy.deepcopy(build("llama"))
    quantize_model(model)
    peft_model = peftlab.get_peft_model(model, peftlab.LoraConfig(r=4, target_modules=["q_proj"], use_dora=True))
    perturb(peft_model)
    q_proj = peft_model.get_base_model().model.layers[0].self_attn.q_proj
    packed = q_proj.base_layer
    expected = output(peft_model.eval(), "llama")
    peft_model.merge_adapter()
    assert type(q_proj.base_layer) is torch.nn.Linear and q_proj.base_layer.weight.dtype == torch.float32
    torch.testing.assert_close(output(peft_model, "llama"), expected, rtol=0, atol=1e-5)
    peft_model.unmerge_adapter()
    assert q_proj.base_layer is packed
    torch.testing.assert_close(output(peft_model, "llama"), expected, rtol=0, atol=0)


def test_the_backward_pass_dequantizes_again_instead_of_keeping_a_float_copy():
    layer = Linear4bit(torch.nn.Linear(384, 256))
    x = torch.randn(4, 384, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = layer(x)
    assert not any(t.shape == (256, 384) for t in saved)          # no (out, in) float matrix kept for backward
    y.square().sum().backward()
    x2 = x.detach().clone().requires_grad_()
    torch.nn.functional.linear(x2, layer.dequantize(), layer.bias).square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=0, atol=1e-6)
