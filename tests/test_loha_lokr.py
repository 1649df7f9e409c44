"""What is their own in LoHa and LoKr: the update each builds, how LoKr splits a layer's
dimensions, the rank each reaches, their parameter counts, their dropouts, what they refuse.
(The invariants every method shares, and the round trips with peft, are in test_conformance.py.)"""
import peft
import pytest
import torch
from lora_testutils import build, one_thread  # noqa: F401 (autouse fixture)
from peft.tuners.lokr.layer import factorization as peft_factorization
from torch import nn

import peftlab
from peftlab import LoHaConfig, LoKrConfig, LoraConfig, PeftConfig, get_peft_model
from peftlab.tuners.lokr import factorization


class OneLayer(nn.Module):
    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.proj = nn.Linear(in_features, out_features)

    def forward(self, x):
        return self.proj(x)


def adapted(config, in_features=12, out_features=10, lib=peftlab, seed=0):
    """A one-layer model adapted with `config`, and its wrapped layer."""
    torch.manual_seed(seed)
    model = lib.get_peft_model(OneLayer(in_features, out_features), config)
    return model, model.base_model.model.proj


def delta_of_output(layer, x):
    """ΔW x as the layer computes it: its output minus the base layer's."""
    return layer(x) - layer.base_layer(x)


def rank(matrix: torch.Tensor) -> int:
    """Numerical rank at float32's tolerance: the update is computed in float32, so casting it to
    double first would count its rounding noise as rank."""
    return int(torch.linalg.matrix_rank(matrix.detach().float()))


# --- the update each method builds ---------------------------------------------------------------------
def test_loha_update_is_the_hadamard_product_of_two_low_rank_matrices_scaled_by_alpha_over_r():
    _, layer = adapted(LoHaConfig(r=3, alpha=6, target_modules=["proj"], init_weights=False))
    p = {k.split(".")[0]: v for k, v in layer.named_parameters() if "default" in k}
    assert {k: tuple(v.shape) for k, v in p.items()} == {
        "hada_w1_a": (10, 3), "hada_w1_b": (3, 12), "hada_w2_a": (10, 3), "hada_w2_b": (3, 12)}
    # entry by entry: ΔW[i, j] = (sum_p B1[i,p] A1[p,j]) * (sum_q B2[i,q] A2[q,j]) * 6 / 3
    expected = torch.einsum("ip,pj,iq,qj->ij", p["hada_w1_a"], p["hada_w1_b"], p["hada_w2_a"], p["hada_w2_b"]) * 2.0
    torch.testing.assert_close(layer.get_delta_weight("default"), expected)
    x = torch.randn(4, 12)
    torch.testing.assert_close(delta_of_output(layer, x), x @ expected.T)


@pytest.mark.parametrize("r,decompose_both", [(1, True), (2, False), (8, False)])
def test_lokr_update_is_the_kronecker_product_of_its_factors_scaled_by_alpha_over_r(r, decompose_both):
    """32 = 4 * 8 and 24 = 4 * 6: W1 is (4, 4), W2 (8, 6); r=8 makes both full, still scaled by alpha / r."""
    config = LoKrConfig(r=r, alpha=3, target_modules=["proj"], init_weights=False, decompose_both=decompose_both)
    _, layer = adapted(config, in_features=24, out_features=32)
    W1, W2 = layer.factor("default", 1), layer.factor("default", 2)
    assert W1.shape == (4, 4) and W2.shape == (8, 6)
    assert ("default" in layer.lokr_w1) == (not decompose_both) and ("default" in layer.lokr_w2) == (r == 8)
    expected = torch.empty(32, 24)
    for i in range(4):          # block (i, j) of ΔW is W1[i, j] * W2
        for j in range(4):
            expected[8 * i:8 * (i + 1), 6 * j:6 * (j + 1)] = W1[i, j] * W2
    expected *= 3 / r
    torch.testing.assert_close(layer.get_delta_weight("default"), expected)
    x = torch.randn(4, 24)
    torch.testing.assert_close(delta_of_output(layer, x), x @ expected.T)


@pytest.mark.parametrize("config_class", [LoHaConfig, LoKrConfig])
def test_the_update_matches_peft_s_for_the_same_factors(config_class):
    """The oracle: peft's get_delta_weight on the same tensors (here with a rank/alpha pattern)."""
    kw = dict(r=2, alpha=4, rank_pattern={"proj": 3}, alpha_pattern={"proj": 5}, init_weights=False,
              target_modules=["proj"])
    ours, layer = adapted(config_class(**kw), in_features=36, out_features=20)
    theirs, their_layer = adapted(getattr(peft, config_class.__name__)(**kw), 36, 20, lib=peft)
    assert layer.r["default"] == 3 and layer.scaling["default"] == 5 / 3
    their_layer.load_state_dict(layer.state_dict())
    torch.testing.assert_close(layer.get_delta_weight("default"), their_layer.get_delta_weight("default"))


def test_lokr_inits_zero_w1_by_default_and_w2_the_lycoris_way():
    _, default = adapted(LoKrConfig(r=1, target_modules=["proj"], decompose_both=True), 36, 20)
    _, lycoris = adapted(LoKrConfig(r=1, target_modules=["proj"], decompose_both=True, init_weights="lycoris"), 36, 20)
    for layer, zero in ((default, "lokr_w1_a"), (lycoris, "lokr_w2_b")):
        assert all(bool(getattr(layer, n)["default"].eq(0).all()) == (n == zero)
                   for n in ("lokr_w1_a", "lokr_w1_b", "lokr_w2_a", "lokr_w2_b"))
        assert not layer.get_delta_weight("default").any()


# --- LoKr's factorization of dimensions --------------------------------------------------------------------
@pytest.mark.parametrize("factor", [-1, 1, 2, 3, 4, 5, 8, 16, 64])
def test_factorization_splits_dimensions_as_peft_does(factor):
    for dimension in [*range(1, 300), 512, 768, 1000, 1024, 2048, 3072, 4096, 11008]:
        assert factorization(dimension, factor) == peft_factorization(dimension, factor), (dimension, factor)


def test_factorization_examples():
    assert factorization(128) == (8, 16) and factorization(96) == (8, 12) and factorization(64) == (8, 8)
    assert factorization(127) == (1, 127)                  # a prime cannot be split
    assert factorization(96, 5) == (4, 24)                 # the first part at most 5
    assert factorization(8, 4) == (4, 2)                   # a factor that divides is kept first, as in peft


@pytest.mark.parametrize("out_features,in_features", [(32, 32), (96, 32), (128, 64), (20, 36), (13, 8), (4, 16)])
@pytest.mark.parametrize("r,decompose_both,factor", [(1, True, -1), (2, False, -1), (4, True, 4), (8, False, -1),
                                                     (2, True, 2)])
def test_lokr_layouts_and_parameter_counts_match_peft_and_the_formula(out_features, in_features, r, decompose_both,
                                                                      factor):
    kw = dict(r=r, target_modules=["proj"], decompose_both=decompose_both, decompose_factor=factor)
    ours, _ = adapted(LoKrConfig(**kw), in_features, out_features)
    theirs, _ = adapted(peft.LoKrConfig(**kw), in_features, out_features, lib=peft)
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.named_parameters() if v.requires_grad}  # noqa: E731
    assert shapes(ours) == shapes(theirs)
    a, b = peft_factorization(out_features, factor)
    c, d = peft_factorization(in_features, factor)
    w1 = r * (a + c) if decompose_both and r < max(a, c) / 2 else a * c
    w2 = r * (b + d) if r < max(b, d) / 2 else b * d
    assert ours.get_nb_trainable_parameters()[0] == w1 + w2


def test_loha_parameter_count_is_2_r_times_in_plus_out_per_layer():
    model = get_peft_model(build("llama"), LoHaConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"]))
    # per Llama layer: q 32 -> 32, v 32 -> 16, down 64 -> 32; two layers
    assert model.get_nb_trainable_parameters()[0] == 2 * 2 * 4 * ((32 + 32) + (32 + 16) + (64 + 32))


# --- the rank each method reaches -----------------------------------------------------------------------
@pytest.mark.parametrize("r", [1, 2, 3, 4, 6, 8])
def test_loha_reaches_rank_r_squared_where_lora_of_the_same_r_reaches_r(r):
    out_features, in_features = 40, 48
    _, loha = adapted(LoHaConfig(r=r, target_modules=["proj"], init_weights=False), in_features, out_features)
    _, lora = adapted(LoraConfig(r=r, target_modules=["proj"], init_lora_weights=False), in_features, out_features)
    assert rank(loha.get_delta_weight("default")) == min(r * r, in_features, out_features)
    assert rank(lora.get_delta_weight("default")) == r


@pytest.mark.parametrize("r,decompose_both,expected", [(1, True, 1), (2, True, 4), (2, False, 16), (8, False, 64)])
def test_lokr_rank_is_the_product_of_its_factors_ranks(r, decompose_both, expected):
    """64 = 8 * 8: W1 and W2 are (8, 8), full (rank 8) or rank r."""
    config = LoKrConfig(r=r, target_modules=["proj"], init_weights=False, decompose_both=decompose_both)
    _, layer = adapted(config, 64, 64)
    W1, W2 = layer.factor("default", 1), layer.factor("default", 2)
    assert rank(layer.get_delta_weight("default")) == rank(W1) * rank(W2) == expected


# --- dropouts (training mode only) ---------------------------------------------------------------------
def test_module_dropout_skips_the_whole_adapter_in_training_only():
    model, layer = adapted(LoHaConfig(r=2, target_modules=["proj"], init_weights=False, module_dropout=0.9))
    x = torch.randn(3, 12)
    torch.manual_seed(0)
    skipped = sum(not delta_of_output(layer, x).any() for _ in range(200))
    assert 150 < skipped < 200                         # about 90% of the steps, never in eval mode
    model.eval()
    assert delta_of_output(layer, x).abs().min() > 0


@pytest.mark.parametrize("config,rescaled", [
    (LoHaConfig(r=2, target_modules=["proj"], init_weights=False, rank_dropout=0.5), True),
    (LoKrConfig(r=2, target_modules=["proj"], init_weights=False, rank_dropout=0.5), False),
    (LoKrConfig(r=2, target_modules=["proj"], init_weights=False, rank_dropout=0.5, rank_dropout_scale=True), True),
])
def test_rank_dropout_drops_output_rows_of_the_update(config, rescaled):
    model, layer = adapted(config, in_features=16, out_features=40)
    x = torch.randn(3, 16)
    full = x @ layer.get_delta_weight("default").T                  # (3, 40): every output row of ΔW
    torch.manual_seed(1)
    dropped = delta_of_output(layer, x)
    kept = dropped.abs().sum(0) > 0
    assert 0 < kept.sum() < 40 and not dropped[:, ~kept].any()
    scale = 40 / kept.sum() if rescaled else 1.0
    torch.testing.assert_close(dropped[:, kept], full[:, kept] * scale)
    model.eval()
    torch.testing.assert_close(delta_of_output(layer, x), full)


# --- what they refuse -------------------------------------------------------------------------------------
@pytest.mark.parametrize("config_class", [LoHaConfig, LoKrConfig])
def test_options_peftlab_does_not_implement_or_that_make_no_sense_are_refused(config_class):
    with pytest.raises(ValueError, match="use_effective_conv2d=True is not implemented in peftlab"):
        config_class(use_effective_conv2d=True)
    with pytest.raises(ValueError, match="positive integer"):
        config_class(r=0)
    with pytest.raises(ValueError, match="positive integer"):
        config_class(rank_pattern={"q_proj": 0})
    with pytest.raises(ValueError, match="rank_dropout must be in"):
        config_class(rank_dropout=1.0)
    with pytest.raises(ValueError, match="module_dropout must be in"):
        config_class(module_dropout=-0.1)
    with pytest.raises(ValueError, match="init_weights"):
        config_class(init_weights="gaussian")


def test_lokr_refuses_a_meaningless_decompose_factor():
    with pytest.raises(ValueError, match="decompose_factor must be -1"):
        LoKrConfig(decompose_factor=0)


def test_a_peft_folder_with_effective_conv2d_is_refused(tmp_path):
    config = peft.LoHaConfig(target_modules=["proj"], use_effective_conv2d=True)
    peft.get_peft_model(OneLayer(12, 10), config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="use_effective_conv2d"):
        PeftConfig.from_pretrained(tmp_path)
