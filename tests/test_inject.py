"""Target resolution: names and suffixes, regex, all-linear, layers_to_transform, errors."""
import pytest
from lora_testutils import build, one_thread  # noqa: F401 (autouse fixture)
from torch import nn
from transformers.pytorch_utils import Conv1D

from peftlab import IA3Config, LoraConfig, get_peft_model
from peftlab.tuners import IA3Model, LoraModel
from peftlab.tuners.targeting import find_targets, layer_index, replace_module


def targets(model, **kw):
    return find_targets(model, LoraConfig(**kw), LoraModel)


def test_list_entries_match_full_names_or_dotted_suffixes():
    model = build("llama")
    assert targets(model, target_modules=["q_proj", "v_proj"]) == [
        f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")]
    assert targets(model, target_modules=["model.layers.1.mlp.up_proj"]) == ["model.layers.1.mlp.up_proj"]
    # "proj" is not a dotted suffix of "q_proj": no partial-word matches
    with pytest.raises(ValueError, match="'proj' matches no module"):
        targets(model, target_modules=["proj"])


def test_regex_must_match_the_whole_name():
    model = build("llama")
    assert targets(model, target_modules=r".*\.0\.self_attn\.(q|k)_proj") == [
        "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj"]
    with pytest.raises(ValueError, match="matches no module"):
        targets(model, target_modules="q_proj")   # a full match is required


def test_all_linear_skips_the_output_head_and_includes_conv1d():
    llama = targets(build("llama"), target_modules="all-linear")
    assert len(llama) == 2 * 7 and "lm_head" not in llama
    gpt2 = targets(build("gpt2"), target_modules="all-linear")
    assert len(gpt2) == 2 * 4 and "lm_head" not in gpt2
    assert all(isinstance(build("gpt2").get_submodule(n), Conv1D) for n in gpt2)


def test_layer_index_and_layers_to_transform():
    assert layer_index("transformer.h.3.attn.c_attn") == 3
    assert layer_index("model.layers.12.mlp.up_proj") == 12
    assert layer_index("lm_head") is None
    assert layer_index("model.layers.2.mlp.experts.5.w1", layers_pattern="experts") == 5
    model = build("llama")
    assert targets(model, target_modules=["q_proj"], layers_to_transform=[1]) == ["model.layers.1.self_attn.q_proj"]
    assert targets(model, target_modules=["q_proj"], layers_to_transform=0) == ["model.layers.0.self_attn.q_proj"]
    with pytest.raises(ValueError, match=r"layer indices are \[0, 1\]"):
        targets(model, target_modules=["q_proj"], layers_to_transform=[5])
    with pytest.raises(ValueError, match="regex"):
        LoraConfig(target_modules=".*q_proj", layers_to_transform=[0])


def test_unknown_target_names_the_closest_modules_and_what_can_be_targeted():
    with pytest.raises(ValueError) as err:
        targets(build("llama"), target_modules=["q_prj", "v_proj"])
    msg = str(err.value)
    assert "'q_prj' matches no module of LlamaForCausalLM" in msg
    assert "Closest module names: q_proj" in msg
    assert "gate_proj" in msg and "(Linear)" in msg and "embed_tokens (Embedding)" in msg


def test_unsupported_layer_type_says_what_is_supported():
    with pytest.raises(ValueError) as err:
        targets(build("llama"), target_modules=["mlp"])
    msg = str(err.value)
    assert "LlamaMLP" in msg and "nn.Linear" in msg and "transformers.Conv1D" in msg
    assert "gate_proj" in msg   # the sublayers that could be targeted instead
    with pytest.raises(ValueError, match="LayerNorm"):
        targets(build("gpt2"), target_modules=["ln_1"])


def test_exclude_modules_and_modules_to_save_are_not_wrapped():
    model = build("llama")
    assert targets(model, target_modules=["q_proj", "v_proj"], exclude_modules=["v_proj"]) == [
        "model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"]
    bert = targets(build("bert"), target_modules="all-linear", modules_to_save=["classifier"])
    assert "classifier" not in bert and "bert.pooler.dense" in bert


def test_default_targets_for_known_architectures_only():
    assert targets(build("llama"), target_modules=None) == [
        f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")]
    with pytest.raises(ValueError, match="target_modules is required for MLP with LORA"):
        targets(build("mlp"), target_modules=None)


def test_defaults_all_linear_and_errors_follow_the_method():
    """Each method registers its own layer types and defaults: IA3 wraps no embedding, and its
    Llama default is k, v and down_proj (peft's table), not LoRA's q and v."""
    llama = build("llama")
    assert find_targets(llama, IA3Config(), IA3Model) == [
        f"model.layers.{i}.{p}" for i in range(2) for p in ("self_attn.k_proj", "self_attn.v_proj", "mlp.down_proj")]
    all_linear = find_targets(llama, IA3Config(target_modules="all-linear"), IA3Model)
    assert all_linear == targets(llama, target_modules="all-linear")
    with pytest.raises(ValueError) as err:
        find_targets(llama, IA3Config(target_modules=["embed_tokens"]), IA3Model)
    assert "IA3 wraps only nn.Linear, transformers.Conv1D" in str(err.value)
    with pytest.raises(ValueError) as err:
        find_targets(llama, IA3Config(target_modules=["q_prj"]), IA3Model)
    assert "Layers IA3 can wrap" in str(err.value) and "(Embedding)" not in str(err.value)


def test_wrapper_insides_are_not_targets():
    """A second adapter with "all-linear" must not wrap the first adapter's lora_A / base_layer."""
    model = get_peft_model(build("llama"), LoraConfig(target_modules="all-linear"))
    again = targets(model.get_base_model(), target_modules="all-linear")
    assert again == targets(build("llama"), target_modules="all-linear")


def test_replace_module():
    model = build("mlp")
    new = nn.Linear(8, 16)
    replace_module(model, "fc1", new)
    assert model.fc1 is new
