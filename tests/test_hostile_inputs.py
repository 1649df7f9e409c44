"""Broken or hostile adapter folders and the mistakes users make: each is refused with an error that
says what was wrong, and nothing is lost (a failed save keeps the previous adapter, a refused load
leaves the model as it was)."""
import json
import math
import typing
from dataclasses import fields

import pytest
import torch
from lora_testutils import build, inputs, one_thread, output, perturb  # noqa: F401 (autouse fixture)
from safetensors.torch import load_file, save_file
from torch import nn

import peftlab
from peftlab import LoraConfig, PeftConfig, PeftModel, get_peft_model
from peftlab.config import CONFIG_REGISTRY
from peftlab.hf_format import WEIGHTS_NAME
from peftlab.nf4 import Linear4bit, quantize_model, quantize_nf4
from peftlab.tuners.wrapper import AdapterWrapper

# What each method needs besides its defaults to be a valid config.
REQUIRED = {"ADALORA": {"total_step": 10}, "P_TUNING": {"num_virtual_tokens": 4},
            "PREFIX_TUNING": {"num_virtual_tokens": 4}, "PROMPT_TUNING": {"num_virtual_tokens": 4}}


def lora_llama(**config):
    settings = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]} | config
    model = get_peft_model(build("llama"), LoraConfig(**settings))
    perturb(model)
    return model.eval()


def saved(tmp_path, **config):
    model = lora_llama(**config)
    model.save_pretrained(tmp_path)
    return model, output(model, "llama")


def edit_config(folder, **changes):
    path = folder / "adapter_config.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps(data | changes))


# --- saving is atomic ------------------------------------------------------------------------------

@pytest.mark.parametrize("failing", ["peftlab.hf_format.save_file", "peftlab.hf_format.get_peft_model_state_dict"])
def test_a_save_that_fails_midway_leaves_the_previous_adapter_whole(tmp_path, monkeypatch, failing):
    _, before = saved(tmp_path, lora_alpha=8)
    newer = lora_llama(lora_alpha=32, use_rslora=True)          # another scaling: a mixed folder would load wrong

    def broken(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(failing, broken)
    with pytest.raises(OSError, match="disk full"):
        newer.save_pretrained(tmp_path)
    monkeypatch.undo()

    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_config.json", WEIGHTS_NAME]   # no leftovers
    assert json.loads((tmp_path / "adapter_config.json").read_text())["lora_alpha"] == 8
    loaded = PeftModel.from_pretrained(build("llama"), tmp_path)
    torch.testing.assert_close(output(loaded, "llama"), before, rtol=0, atol=0)


def test_a_save_that_succeeds_replaces_both_files(tmp_path):
    saved(tmp_path, lora_alpha=8)
    newer = lora_llama(lora_alpha=32)
    newer.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(build("llama"), tmp_path)
    torch.testing.assert_close(output(loaded, "llama"), output(newer, "llama"))
    assert loaded.peft_config["default"].lora_alpha == 32


# --- configs are checked field by field ---------------------------------------------------------------

@pytest.mark.parametrize("data,message", [
    ([1, 2], "must be a JSON object"),
    ("LORA", "must be a JSON object"),
    ({"r": 8}, "no peft_type"),
    ({"peft_type": ["LORA"]}, "Unknown peft_type"),
])
def test_a_config_that_is_not_an_object_or_names_no_method_is_refused_in_words(data, message):
    with pytest.raises(ValueError, match=message):
        PeftConfig.from_dict(data)


@pytest.mark.parametrize("field,value", [("lora_alpha", None), ("lora_alpha", "16"), ("lora_alpha", math.nan),
                                         ("lora_alpha", math.inf), ("use_rslora", "false"), ("use_rslora", 0),
                                         ("r", 4.0), ("r", True), ("lora_dropout", "0.1"),
                                         ("target_modules", ["q_proj", 3]), ("modules_to_save", [None])])
def test_lora_fields_of_the_wrong_type_are_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"LoraConfig\.{field} = .* is not allowed: it must be"):
        LoraConfig(**{field: value})


def test_a_string_false_in_a_saved_config_does_not_switch_rslora_on(tmp_path):
    saved(tmp_path)
    edit_config(tmp_path, use_rslora="false")
    base = build("llama")
    with pytest.raises(ValueError, match=r"use_rslora = 'false' is not allowed: it must be true/false"):
        PeftModel.from_pretrained(base, tmp_path)
    assert not any(isinstance(m, AdapterWrapper) for m in base.modules())


def wrong_values(kind) -> list:
    """Values the declared type `kind` does not admit: null where it is not optional, a string where
    no string is, NaN always (no field takes it), an integer where only true/false is."""
    admitted = set(typing.get_args(kind)) or {kind}
    wrong = [math.nan]
    if type(None) not in admitted:
        wrong.append(None)
    if str not in admitted:
        wrong.append("x7")
    if admitted & {bool} and not admitted & {int, float}:
        wrong.append(1)
    return wrong


def every_field():
    for peft_type, cls in sorted(CONFIG_REGISTRY.items()):
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            kind = hints[f.name]
            if typing.get_origin(kind) is list or any(typing.get_origin(a) is list for a in typing.get_args(kind)):
                continue   # lists: covered by target_modules above
            for value in wrong_values(kind):
                yield pytest.param(cls, f.name, value, id=f"{peft_type}.{f.name}={value!r}")


@pytest.mark.parametrize("cls,field,value", list(every_field()))
def test_every_field_of_every_method_refuses_a_value_of_the_wrong_type(cls, field, value):
    with pytest.raises(ValueError, match=rf"{cls.__name__}\.{field} = .* is not allowed"):
        cls(**REQUIRED.get(cls.peft_type, {}) | {field: value})


def test_every_method_has_fields_checked_by_the_sweep_above():
    checked = {p.values[0] for p in every_field()}
    assert checked == set(CONFIG_REGISTRY.values())


# --- names and sizes read from files are not trusted ----------------------------------------------------

@pytest.mark.parametrize("name", ["../outside", "a/b", "a\\b", "/tmp/elsewhere", ""])
def test_an_adapter_name_is_one_path_component(tmp_path, name):
    model = lora_llama()
    with pytest.raises(ValueError, match="cannot be used"):
        model.add_adapter(name, LoraConfig(r=2, target_modules=["q_proj"]))
    model.save_pretrained(tmp_path / "inside")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inside"]


def test_a_rank_far_larger_than_the_model_is_refused_before_anything_is_built(tmp_path):
    saved(tmp_path)
    edit_config(tmp_path, r=10**9)
    base = build("llama")
    before = {k: v.clone() for k, v in base.state_dict().items()}
    with pytest.raises(ValueError, match=r"r=1,000,000,000, more than any dimension .* Nothing was built"):
        PeftModel.from_pretrained(base, tmp_path)
    assert not any(isinstance(m, AdapterWrapper) for m in base.modules())
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in before.items())


def test_a_rank_pattern_far_larger_than_the_model_is_refused_too(tmp_path):
    saved(tmp_path)
    edit_config(tmp_path, rank_pattern={"q_proj": 10**9})
    with pytest.raises(ValueError, match=r"rank_pattern\['q_proj'\]=1,000,000,000.*Nothing was built"):
        PeftModel.from_pretrained(build("llama"), tmp_path)


def test_a_rank_that_disagrees_with_the_tensors_is_refused_by_shape(tmp_path):
    saved(tmp_path)
    edit_config(tmp_path, r=8)
    with pytest.raises(ValueError, match="shape mismatches"):
        PeftModel.from_pretrained(build("llama"), tmp_path)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path, bad):
    saved(tmp_path)
    tensors = load_file(str(tmp_path / WEIGHTS_NAME))
    key = sorted(tensors)[0]
    tensors[key][0, 0] = bad
    save_file(tensors, str(tmp_path / WEIGHTS_NAME))
    with pytest.raises(ValueError, match=rf"non-finite weights \(NaN or inf\) in {key}"):
        PeftModel.from_pretrained(build("llama"), tmp_path)


# --- usability: what reached users as torch's words ----------------------------------------------------

def test_a_regex_target_that_does_not_compile_says_so():
    with pytest.raises(ValueError, match=r"target_modules='\(\[' .* regular expression .* does not compile"):
        LoraConfig(target_modules="([")
    with pytest.raises(ValueError, match=r"exclude_modules=.* does not compile"):
        LoraConfig(target_modules=["q_proj"], exclude_modules="*q")


def test_modules_to_save_as_one_string_is_one_module_name():
    config = LoraConfig(target_modules=["fc1"], modules_to_save="fc2")
    assert config.modules_to_save == ["fc2"]
    model = get_peft_model(build("mlp"), config)
    assert set(model.base_model.model.fc2.modules_to_save) == {"default"}


def test_a_training_step_on_a_merged_adapter_is_refused_with_how_to_unmerge():
    model = lora_llama()
    model.merge_adapter()
    model.train()
    with pytest.raises(RuntimeError, match=r"merged into the base weights.*unmerge_adapter\(\)"):
        model(**inputs("llama"))
    with torch.no_grad():
        model(**inputs("llama"))      # running the merged model is fine
    model.eval()
    model(**inputs("llama"))
    model.unmerge_adapter()
    model.train()
    model(**inputs("llama"), labels=inputs("llama")["input_ids"]).loss.backward()


# --- NF4 -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("block_size", [0, -64, 2.5, True])
def test_nf4_refuses_a_block_size_that_is_not_a_positive_integer(block_size):
    with pytest.raises(ValueError, match="block_size must be a positive integer"):
        quantize_nf4(torch.randn(8, 8), block_size=block_size)


def test_nf4_refuses_non_finite_weights_by_layer_name_and_swaps_nothing():
    model = build("llama")
    layer = model.model.layers[0].self_attn.q_proj
    with torch.no_grad():
        layer.weight[0, 0] = math.nan
    with pytest.raises(ValueError, match=r"model\.layers\.0\.self_attn\.q_proj holds NaN or inf \(1 of"):
        quantize_model(model)
    assert not any(isinstance(m, Linear4bit) for m in model.modules())
    with pytest.raises(ValueError, match="NaN or inf"):
        Linear4bit(nn.Linear(4, 4).requires_grad_(False).apply(lambda m: m.weight.data.fill_(math.inf)))


def test_the_public_api_still_loads_an_adapter_saved_by_peft_style_defaults(tmp_path):
    """The checks refuse nothing a normal round trip writes: every field of a saved config passes."""
    model, before = saved(tmp_path)
    loaded = PeftModel.from_pretrained(build("llama"), tmp_path)
    torch.testing.assert_close(output(loaded, "llama"), before, rtol=0, atol=0)
    assert isinstance(peftlab.PeftConfig.from_pretrained(tmp_path), LoraConfig)
