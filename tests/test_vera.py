"""What is VeRA's own: one frozen random pair (A, B) shared by every layer, drawn from a key exactly
as peft draws it, saved or redrawn on load, two trained vectors per layer, and the rules for
several adapters sharing the pair. (The invariants every method shares are in test_conformance.py.)"""
import json

import peft
import pytest
import torch
from lora_testutils import build, inputs, one_thread, output, perturb  # noqa: F401 (autouse fixture)
from safetensors.torch import load_file

import peftlab
from peftlab import VeraConfig, get_peft_model
from peftlab.tuners.vera import VeraLinear

# peft warns that save_projection=False relies on the key; its other notices are expected too.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:peft.*", "ignore::FutureWarning:transformers.*")

# Llama's q_proj is 32 -> 32, v_proj 32 -> 16 (grouped keys and values), down_proj 64 -> 32.
LLAMA_TARGETS = ["q_proj", "v_proj", "down_proj"]
TARGETS = {"llama": LLAMA_TARGETS, "gpt2": ["c_attn", "c_fc"], "neox": ["query_key_value", "dense_4h_to_h"]}


def vera_layers(model) -> dict[str, VeraLinear]:
    return {n: m for n, m in model.get_base_model().named_modules() if isinstance(m, VeraLinear)}


@pytest.mark.parametrize("arch", ["llama", "gpt2", "neox"])
def test_the_projections_are_drawn_from_the_key_as_peft_draws_them(arch):
    drawn = {}
    for key in (0, 7):
        ours = get_peft_model(build(arch), VeraConfig(r=8, target_modules=TARGETS[arch], projection_prng_key=key))
        theirs = peft.get_peft_model(build(arch), peft.VeraConfig(r=8, target_modules=TARGETS[arch],
                                                                  projection_prng_key=key))
        for name in ("vera_A", "vera_B"):
            assert torch.equal(getattr(ours.base_model, name)["default"], getattr(theirs.base_model, name)["default"])
        drawn[key] = ours.base_model.vera_A["default"]
    assert not torch.equal(drawn[0], drawn[7])


def test_one_frozen_pair_serves_every_layer_and_each_reads_its_corner():
    model = get_peft_model(build("llama"), VeraConfig(r=4, target_modules=LLAMA_TARGETS))
    tuner = model.base_model
    vera_A, vera_B = tuner.vera_A["default"], tuner.vera_B["default"]
    assert vera_A.shape == (4, 64) and vera_B.shape == (32, 4)    # the widest input, the tallest output
    layers = vera_layers(model)
    assert len(layers) == 6 and all(layer.projections == (tuner.vera_A, tuner.vera_B) for layer in layers.values())
    v_proj = layers["model.layers.0.self_attn.v_proj"]
    assert v_proj.A("default").data_ptr() == vera_A.data_ptr()     # views of the one tensor, not copies
    assert v_proj.A("default").shape == (4, 32) and v_proj.B("default").shape == (16, 4)
    # Frozen buffers, not parameters, stored once for the model (not once per layer).
    assert not any("vera_A" in n or "vera_B" in n for n, _ in model.named_parameters())
    assert [k for k in model.state_dict() if "vera_A" in k] == ["base_model.vera_A.default"]

    perturb(model)
    b, d = v_proj.vera_lambda_b["default"], v_proj.vera_lambda_d["default"]
    delta = torch.diag(b) @ vera_B[:16] @ torch.diag(d) @ vera_A[:, :32]   # ΔW = Λ_b B Λ_d A
    torch.testing.assert_close(v_proj.get_delta_weight("default"), delta)
    x = torch.randn(2, 3, 32)
    torch.testing.assert_close(v_proj(x), v_proj.base_layer(x) + x @ delta.T)


def test_training_moves_the_vectors_and_never_the_projections():
    model = get_peft_model(build("llama"), VeraConfig(r=4, target_modules=LLAMA_TARGETS)).train()
    before = model.base_model.vera_A["default"].clone()
    batch = inputs("llama")
    model(**batch, labels=batch["input_ids"]).loss.backward()
    layer = vera_layers(model)["model.layers.0.self_attn.q_proj"]
    assert layer.vera_lambda_b["default"].grad.abs().sum() > 0
    assert torch.equal(model.base_model.vera_A["default"], before)


def test_a_layer_trains_r_plus_out_numbers_as_in_peft():
    r = 16
    ours = get_peft_model(build("llama"), VeraConfig(r=r, target_modules=LLAMA_TARGETS))
    theirs = peft.get_peft_model(build("llama"), peft.VeraConfig(r=r, target_modules=LLAMA_TARGETS))
    expected = sum(r + layer.out_features for layer in vera_layers(ours).values())
    assert expected == 2 * ((r + 32) + (r + 16) + (r + 32))        # two decoder layers: q, v, down
    assert ours.get_nb_trainable_parameters() == theirs.get_nb_trainable_parameters() == (
        expected, peftlab.parameter_counts(build("llama"))["total"] + expected)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_without_saved_projections_the_folder_is_smaller_and_loads_the_same_in_both_libraries(tmp_path, arch):
    def config(lib, save):
        return lib.VeraConfig(r=64, target_modules=TARGETS[arch], save_projection=save)

    ours = get_peft_model(build(arch), config(peftlab, False))
    perturb(ours)
    expected = output(ours.eval(), arch)
    ours.save_pretrained(tmp_path / "without")
    with_projections = get_peft_model(build(arch), config(peftlab, True))
    with_projections.save_pretrained(tmp_path / "with")
    files = {k: tmp_path / k / "adapter_model.safetensors" for k in ("with", "without")}
    saved_only_with = set(load_file(files["with"])) - set(load_file(files["without"]))
    assert saved_only_with == {"base_model.vera_A", "base_model.vera_B"}
    assert files["without"].stat().st_size < files["with"].stat().st_size / 3
    # A and B are drawn again from the key, in peftlab and in peft.
    loaded = peftlab.PeftModel.from_pretrained(build(arch), tmp_path / "without")
    torch.testing.assert_close(output(loaded, arch), expected, rtol=0, atol=0)
    in_peft = peft.PeftModel.from_pretrained(build(arch), tmp_path / "without").eval()
    torch.testing.assert_close(output(in_peft, arch), expected, rtol=0, atol=1e-5)
    # And the other way: peft's folder without projections, loaded in peftlab.
    theirs = peft.get_peft_model(build(arch), config(peft, False))
    perturb(theirs)
    theirs.save_pretrained(tmp_path / "peft")
    assert not any("vera_A" in k for k in load_file(tmp_path / "peft" / "adapter_model.safetensors"))
    loaded = peftlab.PeftModel.from_pretrained(build(arch), tmp_path / "peft")
    torch.testing.assert_close(output(loaded, arch), output(theirs.eval(), arch), rtol=0, atol=1e-5)


def test_the_saved_config_has_exactly_peft_fields(tmp_path):
    get_peft_model(build("llama"), VeraConfig(r=4, target_modules=["q_proj"])).save_pretrained(tmp_path / "ours")
    peft.get_peft_model(build("llama"), peft.VeraConfig(r=4, target_modules=["q_proj"])).save_pretrained(
        tmp_path / "peft")
    ours, theirs = (json.loads((tmp_path / d / "adapter_config.json").read_text()) for d in ("ours", "peft"))
    assert set(ours) == set(theirs) - {"auto_mapping", "peft_version", "revision"}


def test_bias_vera_only_trains_and_round_trips_with_peft(tmp_path):
    def config(lib):
        return lib.VeraConfig(r=4, target_modules=["q_proj", "fc1"], bias="vera_only")

    ours = get_peft_model(build("opt"), config(peftlab))
    assert sum(n.endswith("base_layer.bias") for n, p in ours.named_parameters() if p.requires_grad) == 4
    perturb(ours)
    ours.save_pretrained(tmp_path / "ours")
    in_peft = peft.PeftModel.from_pretrained(build("opt"), tmp_path / "ours").eval()
    torch.testing.assert_close(output(in_peft, "opt"), output(ours.eval(), "opt"), rtol=0, atol=1e-5)
    theirs = peft.get_peft_model(build("opt"), config(peft))
    perturb(theirs)
    theirs.save_pretrained(tmp_path / "peft")
    loaded = peftlab.PeftModel.from_pretrained(build("opt"), tmp_path / "peft")
    torch.testing.assert_close(output(loaded, "opt"), output(theirs.eval(), "opt"), rtol=0, atol=1e-5)


def test_a_second_adapter_shares_the_first_ones_projections():
    model = get_peft_model(build("llama"), VeraConfig(r=4, target_modules=LLAMA_TARGETS))
    model.add_adapter("other", VeraConfig(r=4, target_modules=["v_proj"]))
    tuner = model.base_model
    assert tuner.vera_A["other"] is tuner.vera_A["default"] and tuner.vera_B["other"] is tuner.vera_B["default"]
    model.delete_adapter("default")
    assert list(tuner.vera_A) == ["other"] and tuner.vera_A["other"].shape == (4, 64)


def test_adapters_that_cannot_share_the_projections_are_refused_and_change_nothing():
    model = get_peft_model(build("llama"), VeraConfig(r=4, target_modules=["q_proj"]))
    perturb(model)
    expected = output(model, "llama")
    refusals = {
        "same projection_prng_key": VeraConfig(r=4, target_modules=["q_proj"], projection_prng_key=1),
        "agree on save_projection": VeraConfig(r=4, target_modules=["q_proj"], save_projection=False),
        "same r": VeraConfig(r=2, target_modules=["q_proj"]),
        "at least 64 inputs": VeraConfig(r=4, target_modules=["down_proj"]),   # q_proj's pair is 32 wide
    }
    for message, config in refusals.items():
        with pytest.raises(ValueError, match=message):
            model.add_adapter("other", config)
        assert list(model.peft_config) == ["default"] and list(model.base_model.vera_A) == ["default"]
    assert not any("other" in n for n, _ in model.named_parameters())
    torch.testing.assert_close(output(model, "llama"), expected, rtol=0, atol=0)


def test_config_errors_say_what_to_do():
    with pytest.raises(ValueError, match="r must be a positive integer"):
        VeraConfig(r=0)
    with pytest.raises(ValueError, match="bias must be one of 'none', 'all', 'vera_only'"):
        VeraConfig(bias="lora_only")
    with pytest.raises(ValueError, match="vera_dropout must be in"):
        VeraConfig(vera_dropout=1.0)
    with pytest.raises(ValueError, match="set layers_to_transform too"):
        VeraConfig(layers_pattern="layers")
    with pytest.raises(ValueError, match="peft's VeraConfig has no such field"):
        VeraConfig(target_modules=["q_proj"], exclude_modules=["v_proj"])
    with pytest.raises(ValueError, match="VERA wraps only nn.Linear, transformers.Conv1D"):
        get_peft_model(build("llama"), VeraConfig(target_modules=["embed_tokens"]))


def test_a_half_precision_base_keeps_vectors_and_projections_in_fp32():
    model = get_peft_model(build("llama").to(torch.bfloat16), VeraConfig(r=4, target_modules=LLAMA_TARGETS))
    layer = vera_layers(model)["model.layers.0.self_attn.q_proj"]
    assert layer.vera_lambda_d["default"].dtype == model.base_model.vera_A["default"].dtype == torch.float32
    assert output(model, "llama").dtype == torch.bfloat16
