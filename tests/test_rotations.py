"""What is OFT's, HRA's and FourierFT's own (the invariants every method shares are in test_conformance.py):
an orthogonal R keeps the angles between W's rows; the Cayley-Neumann series against the exact inverse;
peft's options (exact Cayley, block sharing, COFT, r instead of a block size, Gram-Schmidt, per-layer
frequencies) against peft both ways; HRA's regulariser; FourierFT's spectral places, drawn from the seed as
peft draws them; clear errors for sizes that cannot fit."""
import json
import math

import peft
import pytest
import torch
from lora_testutils import build, one_thread, output, perturb  # noqa: F401 (autouse fixture)
from peft.tuners.oft.layer import OFTRotationModule
from safetensors.torch import load_file

import peftlab
from peftlab import FourierFTConfig, HRAConfig, LoraConfig, OFTConfig, get_peft_model
from peftlab.tuners.fourierft import FourierFTLayer, spectral_indices
from peftlab.tuners.hra import HRALayer
from peftlab.tuners.oft import OFTLayer, cayley, skew_symmetric
from peftlab.workbook import load_base_model

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:peft.*", "ignore::FutureWarning:transformers.*")

LLAMA = ["q_proj", "v_proj", "down_proj"]   # 32 -> 32, 32 -> 16, 64 -> 32


def layers_of(model, kind) -> dict:
    return {n: m for n, m in model.get_base_model().named_modules() if isinstance(m, kind)}


def random_skew(size: int, spectral_norm: float, seed: int = 0) -> torch.Tensor:
    """A (1, size, size) skew-symmetric Q with ‖Q‖₂ = spectral_norm, in float64."""
    g = torch.Generator().manual_seed(seed)
    upper = torch.randn(1, size * (size - 1) // 2, generator=g, dtype=torch.float64)
    Q = skew_symmetric(upper, size)
    return Q * spectral_norm / torch.linalg.matrix_norm(Q, ord=2)


def both_ways(tmp_path, make_config, arch="llama"):
    """A perturbed adapter of each library, saved, loads in the other with the same logits."""
    for maker, reader, name in ((peftlab.get_peft_model, peft.PeftModel, "ours"),
                                (peft.get_peft_model, peftlab.PeftModel, "theirs")):
        lib = peftlab if name == "ours" else peft
        model = maker(build(arch), make_config(lib))
        perturb(model)
        expected = output(model.eval(), arch)
        model.save_pretrained(tmp_path / name)
        loaded = reader.from_pretrained(build(arch), tmp_path / name).eval()
        torch.testing.assert_close(output(loaded, arch), expected, rtol=0, atol=1e-5, msg=f"{name}'s folder")


# --- OFT -------------------------------------------------------------------------------------------
PATHS = {"q_proj": "model.layers.0.self_attn.q_proj", "v_proj": "model.layers.0.self_attn.v_proj",
         "down_proj": "model.layers.0.mlp.down_proj", "embed_tokens": "model.embed_tokens"}


@pytest.mark.parametrize("method", ["oft", "hra"])
def test_a_merged_rotation_keeps_the_norms_of_the_rows_and_the_angles_between_them(method):
    """W' = W Rᵀ: W' W'ᵀ = W Wᵀ, exactly up to float64 rounding (an embedding: E' = E R, E' E'ᵀ = E Eᵀ).
    LoRA's merged update, by contrast, moves them."""
    targets = {"oft": [*LLAMA, "embed_tokens"], "hra": LLAMA, "lora": LLAMA}
    configs = {"oft": OFTConfig(oft_block_size=4, r=0, use_cayley_neumann=False, target_modules=targets["oft"]),
               "hra": HRAConfig(r=4, target_modules=LLAMA), "lora": LoraConfig(r=4, target_modules=LLAMA)}
    before = build("llama").double()
    moved = {}
    for name in (method, "lora"):
        model = get_peft_model(build("llama").double(), configs[name])
        perturb(model)
        merged = model.merge_and_unload()
        for module in targets[name]:
            W, W0 = (m.get_submodule(PATHS[module]).weight for m in (merged, before))
            assert not torch.allclose(W, W0, atol=1e-3)                      # the adapter did change W
            moved[name, module] = (W @ W.T - W0 @ W0.T).abs().max().item()
    assert max(v for (name, _), v in moved.items() if name == method) < 1e-12
    assert min(v for (name, _), v in moved.items() if name == "lora") > 1e-3


def test_the_cayley_neumann_series_is_the_exact_rotations_transpose_up_to_its_stated_error():
    """R_n (n terms) against the exact (I − Q)(I + Q)⁻¹: it sums the transpose, within ρ^(n−1) + 2ρⁿ/(1 − ρ)."""
    rho = 0.1
    Q = random_skew(8, rho)
    exact = cayley(Q, None)
    torch.testing.assert_close(exact.transpose(1, 2) @ exact, torch.eye(8, dtype=torch.float64)[None],
                               rtol=0, atol=1e-14)                                   # orthogonal
    errors = {}
    for n in range(2, 9):
        series = cayley(Q, n)
        errors[n] = torch.linalg.matrix_norm(series - exact.transpose(1, 2), ord=2).item()
        assert errors[n] <= rho ** (n - 1) + 2 * rho ** n / (1 - rho)
        assert torch.linalg.matrix_norm(series - exact, ord=2).item() > 0.3        # not R itself: its transpose
    assert errors[5] < 2e-4 and errors[8] < errors[6] < errors[5]


@pytest.mark.parametrize("terms", [2, 3, 4, 5, 7, None])
def test_rotations_are_peft_s_for_every_number_of_terms_and_the_exact_inverse(terms):
    """Including peft's n = 3, computed as n = 4."""
    block, weight = 6, 0.2 * torch.randn(3, 15, generator=torch.Generator().manual_seed(1))
    theirs = OFTRotationModule(3, 15, block, 18, use_cayley_neumann=terms is not None,
                               num_cayley_neumann_terms=terms or 5)
    expected = theirs._cayley_batch(weight, block, terms is not None, terms or 5)
    torch.testing.assert_close(cayley(skew_symmetric(weight, block), terms), expected, rtol=0, atol=1e-6)


def test_switching_use_cayley_neumann_on_a_trained_adapter_undoes_its_rotation(tmp_path):
    model = get_peft_model(build("mlp").double(), OFTConfig(oft_block_size=4, r=0, target_modules=["fc1"]))
    perturb(model, scale=0.02)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    (tmp_path / "adapter_config.json").write_text(json.dumps({**config, "use_cayley_neumann": False}))
    flipped = peftlab.PeftModel.from_pretrained(build("mlp").double(), tmp_path)
    R = layers_of(model, OFTLayer)["fc1"].rotation_matrix("default")
    R_flipped = layers_of(flipped, OFTLayer)["fc1"].rotation_matrix("default")
    assert (R_flipped - R.T).abs().max() < 1e-4 < (R_flipped - R).abs().max()


@pytest.mark.parametrize("options", [
    {"use_cayley_neumann": False}, {"block_share": True}, {"r": 4, "oft_block_size": 0},
    {"coft": True, "eps": 0.5}, {"module_dropout": 0.5}, {"num_cayley_neumann_terms": 3}, {"bias": "oft_only"}],
    ids=lambda o: "-".join(map(str, o)))
def test_oft_options_load_both_ways_with_peft(tmp_path, options):
    kw = {"oft_block_size": 8, "r": 0, **options}
    both_ways(tmp_path, lambda lib: lib.OFTConfig(target_modules=[*LLAMA, "embed_tokens"], **kw))


def test_coft_keeps_each_block_within_its_radius_by_rescaling_the_trained_numbers_in_place():
    model = get_peft_model(build("llama"), OFTConfig(oft_block_size=8, r=0, coft=True, eps=0.5, target_modules=LLAMA))
    perturb(model)
    layer = layers_of(model, OFTLayer)["model.layers.0.self_attn.q_proj"]
    rotation = layer.oft_R["default"]                                   # 4 blocks of 8 in q_proj's 32 inputs
    norms = lambda: skew_symmetric(rotation.weight, 8).flatten(1).norm(dim=1)
    radius = 0.5 / math.sqrt(4)
    assert norms().max() > radius
    output(model, "llama")
    assert norms().max() <= radius * (1 + 1e-6)                           # the parameter itself was pulled back


def test_module_dropout_sets_that_share_of_blocks_to_the_identity_in_training_only():
    model = get_peft_model(build("llama"), OFTConfig(oft_block_size=4, r=0, module_dropout=0.5, target_modules=LLAMA))
    perturb(model)
    rotation = layers_of(model, OFTLayer)["model.layers.0.mlp.down_proj"].oft_R["default"]   # 16 blocks of 4
    identity = lambda R: sum(torch.equal(block, torch.eye(4)) for block in R)
    assert identity(rotation.rotations(dropout=True)) == 8
    assert identity(rotation.rotations()) == 0


@pytest.mark.parametrize("config,message", [
    (OFTConfig(oft_block_size=5, r=0, target_modules=["q_proj"]), r"oft_block_size=5 .*rotates 32 numbers.*"
                                                                   r"that fit: 2, 4, 8, 16, 32\."),
    (OFTConfig(r=3, oft_block_size=0, target_modules=["q_proj"]), r"r=3 .*that fit: 1, 2, 4, 8, 16\."),
    (OFTConfig(oft_block_size=64, r=0, target_modules=["q_proj"]), r"oft_block_size=64"),
])
def test_a_block_layout_that_does_not_fit_is_refused_with_the_sizes_that_would(config, message):
    base = build("llama")
    with pytest.raises(ValueError, match=message):
        get_peft_model(base, config)
    assert not any(isinstance(m, OFTLayer) for m in base.modules())


@pytest.mark.parametrize("fields,message", [
    ({"r": 4, "oft_block_size": 8}, "exactly one of r"), ({"r": 0, "oft_block_size": 0}, "exactly one of r"),
    ({"num_cayley_neumann_terms": 1}, "leaves R = I"), ({"bias": "lora_only"}, "bias must be one of"),
    ({"module_dropout": 1.0}, r"module_dropout must be in \[0, 1\)"), ({"coft": True, "eps": 0.0}, "eps")])
def test_bad_oft_configs_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        OFTConfig(**fields)


def test_oft_refuses_convolutions_and_says_why():
    with pytest.raises(ValueError, match="not convolutions: peft's OFT on nn.Conv2d"):
        get_peft_model(build("vit"), OFTConfig(oft_block_size=2, r=0, target_modules=["projection"]))


# --- HRA -------------------------------------------------------------------------------------------
def test_hra_changes_w_by_at_most_rank_r_and_its_h_is_orthogonal():
    model = get_peft_model(build("llama").double(), HRAConfig(r=4, target_modules=["down_proj"]))
    perturb(model)
    layer = layers_of(model, HRALayer)["model.layers.0.mlp.down_proj"]
    H = layer.reflection_matrix("default")
    torch.testing.assert_close(H.T @ H, torch.eye(64, dtype=torch.float64), rtol=0, atol=1e-12)
    W = layer.get_base_weight()
    assert torch.linalg.matrix_rank(layer.reflect(W, "default") - W).item() == 4   # low rank, like LoRA's


def test_the_orthogonality_regulariser_is_zero_for_orthonormal_directions_where_gram_schmidt_changes_nothing():
    model = get_peft_model(build("llama").double(), HRAConfig(r=4, target_modules=LLAMA))
    tuner = model.base_model
    assert tuner.orthogonality_penalty() > 4 * len(layers_of(model, HRALayer)) - 1e-9   # equal pairs at init
    perturb(model)
    layer = layers_of(model, HRALayer)["model.layers.0.self_attn.q_proj"]
    H_chain = layer.reflection_matrix("default")
    layer.hra_apply_GS["default"] = True
    assert (layer.reflection_matrix("default") - H_chain).abs().max() > 1e-3   # different when not orthogonal
    with torch.no_grad():
        for each in layers_of(model, HRALayer).values():
            u = each.hra_u["default"]
            u.copy_(torch.linalg.qr(u).Q * torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=u.dtype))   # orthogonal, any length
    assert tuner.orthogonality_penalty().item() < 1e-24
    H_gram_schmidt = layer.reflection_matrix("default")
    layer.hra_apply_GS["default"] = False
    torch.testing.assert_close(layer.reflection_matrix("default"), H_gram_schmidt, rtol=0, atol=1e-12)


def test_the_regulariser_trains_the_directions_apart():
    """Once a task has split the equal pairs of the start (alone, it moves both of a pair alike)."""
    model = get_peft_model(build("llama"), HRAConfig(r=4, target_modules=LLAMA))
    perturb(model)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    start = model.base_model.orthogonality_penalty().item()
    for _ in range(20):
        optimizer.zero_grad()
        model.base_model.orthogonality_penalty().backward()
        optimizer.step()
    assert model.base_model.orthogonality_penalty().item() < 0.5 * start


def test_hra_options_load_both_ways_with_peft(tmp_path):
    both_ways(tmp_path, lambda lib: lib.HRAConfig(r=4, apply_GS=True, target_modules=LLAMA))


def test_hra_with_an_odd_r_warns_that_it_cannot_start_as_the_base_model():
    with pytest.warns(UserWarning, match="odd r"):
        model = get_peft_model(build("llama"), HRAConfig(r=3, target_modules=LLAMA))
    assert not torch.allclose(output(model, "llama"), output(build("llama"), "llama"), atol=1e-4)


def test_gram_schmidt_with_more_directions_than_inputs_is_refused():
    with pytest.raises(ValueError, match=r"apply_GS=True needs r <= 8"):
        get_peft_model(build("mlp"), HRAConfig(r=10, apply_GS=True, target_modules=["fc1"]))


# --- FourierFT ------------------------------------------------------------------------------------
def test_the_spectral_places_come_from_the_seed_exactly_as_peft_draws_them():
    for seed in (777, 3):
        ours = layers_of(get_peft_model(build("llama"), FourierFTConfig(n_frequency=20, random_loc_seed=seed,
                                                                         target_modules=LLAMA)), FourierFTLayer)
        theirs = peft.get_peft_model(build("llama"), peft.FourierFTConfig(n_frequency=20, random_loc_seed=seed,
                                                                           target_modules=LLAMA))
        for name, layer in ours.items():
            peft_layer = theirs.get_submodule(f"base_model.model.{name}")
            assert torch.equal(layer.indices["default"], peft_layer.indices["default"])
    assert not torch.equal(spectral_indices(32, 32, 20, 777), spectral_indices(32, 32, 20, 3))
    # One seed for every layer: layers of one shape share their places.
    assert torch.equal(ours["model.layers.0.self_attn.q_proj"].indices["default"],
                       ours["model.layers.1.self_attn.q_proj"].indices["default"])


def test_only_the_coefficients_are_saved_and_the_seed_in_the_config_places_them(tmp_path):
    model = get_peft_model(build("llama"), FourierFTConfig(n_frequency=20, target_modules=LLAMA))
    model.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    assert all(k.endswith(".fourierft_spectrum") and t.shape == (20,) for k, t in tensors.items())
    expected = output(model.eval(), "llama")
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["random_loc_seed"] == 777
    (tmp_path / "adapter_config.json").write_text(json.dumps({**config, "random_loc_seed": 5}))
    moved = output(peftlab.PeftModel.from_pretrained(build("llama"), tmp_path), "llama")
    assert not torch.allclose(moved, expected, atol=1e-4)
    torch.testing.assert_close(output(peft.PeftModel.from_pretrained(build("llama"), tmp_path).eval(), "llama"),
                               moved, rtol=0, atol=1e-5)


def test_the_update_lives_on_the_chosen_frequencies_and_their_mirror_images():
    """ΔW = Re(IDFT2(F)) · s: its spectrum is (F + F̄ mirrored) / 2 · s, zero everywhere else."""
    model = get_peft_model(build("llama").double(), FourierFTConfig(n_frequency=12, target_modules=["down_proj"]))
    layer = layers_of(model, FourierFTLayer)["model.layers.0.mlp.down_proj"]
    spectrum = torch.fft.fft2(layer.get_delta_weight("default")) / layer.fourierft_scaling["default"]
    rows, cols = layer.indices["default"]
    support = torch.zeros(32, 64, dtype=torch.bool)
    support[rows, cols] = support[(-rows) % 32, (-cols) % 64] = True
    assert spectrum[~support].abs().max() < 1e-12 and spectrum[support].abs().min() > 1e-6


def test_peft_s_default_starts_from_random_coefficients_and_its_pattern_loads_both_ways(tmp_path):
    model = get_peft_model(build("llama"), FourierFTConfig(n_frequency=20, target_modules=LLAMA))
    assert not torch.allclose(output(model, "llama"), output(build("llama"), "llama"), atol=1e-4)
    layers = layers_of(get_peft_model(build("llama"), FourierFTConfig(n_frequency=20, n_frequency_pattern={
        "down_proj": 50}, target_modules=LLAMA)), FourierFTLayer)
    assert {n.split(".")[-1]: layer.fourierft_n_frequency["default"] for n, layer in layers.items()} == {
        "q_proj": 20, "v_proj": 20, "down_proj": 50}
    both_ways(tmp_path, lambda lib: lib.FourierFTConfig(n_frequency=20, n_frequency_pattern={"down_proj": 50},
                                                       target_modules=LLAMA))


def test_more_frequencies_than_entries_are_refused():
    with pytest.raises(ValueError, match=r"n_frequency=100 is more than the 4 x 16 = 64 entries of fc2"):
        get_peft_model(build("mlp"), FourierFTConfig(n_frequency=100, target_modules=["fc2"]))
    with pytest.raises(ValueError, match="positive integer"):
        FourierFTConfig(n_frequency=0)


# --- all three --------------------------------------------------------------------------------------
@pytest.mark.parametrize("config_class", [OFTConfig, HRAConfig, FourierFTConfig])
def test_layers_pattern_without_layers_to_transform_is_refused_as_peft_refuses_it(config_class):
    with pytest.raises(ValueError, match="set layers_to_transform too"):
        config_class(target_modules=["q_proj"], layers_pattern="layers")
    config_class(target_modules=["q_proj"], layers_pattern="layers", layers_to_transform=[0])


@pytest.mark.parametrize("method,kw", [("OFTConfig", {}), ("HRAConfig", {}), ("FourierFTConfig", {"n_frequency": 100})])
def test_in_memory_names_and_default_targets_are_peft_s(method, kw):
    ours = get_peft_model(build("llama"), getattr(peftlab, method)(**kw))
    theirs = peft.get_peft_model(build("llama"), getattr(peft, method)(**kw))
    assert set(ours.state_dict()) == set(theirs.state_dict())
    assert {n for n, p in ours.named_parameters() if p.requires_grad} == \
           {n for n, p in theirs.named_parameters() if p.requires_grad}


def test_fourierft_s_default_on_gpt2_is_its_mlp_output_projection_as_in_peft():
    ours = get_peft_model(build("gpt2"), FourierFTConfig(n_frequency=20))
    assert {n for n in layers_of(ours, FourierFTLayer)} == {"transformer.h.0.mlp.c_proj", "transformer.h.1.mlp.c_proj"}
    assert ours.peft_config["default"].fan_in_fan_out   # recorded for peft, as it records it


def test_trainable_counts_on_pico_gpt2_s_c_attn_follow_each_method_s_formula():
    """Four c_attn layers, 128 -> 384: LoRA r=4 trains 4·(128 + 384) a layer; OFT blocks of 32,
    (128 / 32)·32·31/2; HRA r=16, 16·128; FourierFT, n_frequency. peft agrees where it can wrap Conv1D."""
    base, _ = load_base_model("pico-gpt2-1m")
    configs = {"LoRA": (LoraConfig(r=4, target_modules=["c_attn"]), 4 * (128 + 384)),
               "OFT": (OFTConfig(oft_block_size=32, r=0, target_modules=["c_attn"]), 4 * 32 * 31 // 2),
               "HRA": (HRAConfig(r=16, target_modules=["c_attn"]), 16 * 128),
               "FourierFT": (FourierFTConfig(n_frequency=2048, target_modules=["c_attn"]), 2048)}
    for name, (config, per_layer) in configs.items():
        model = get_peft_model(load_base_model("pico-gpt2-1m")[0], config)
        assert model.get_nb_trainable_parameters()[0] == 4 * per_layer, name
    theirs = peft.get_peft_model(base, peft.FourierFTConfig(n_frequency=2048, target_modules=["c_attn"]))
    assert theirs.get_nb_trainable_parameters()[0] == 4 * 2048
