"""PeftModel bookkeeping: counting, generate, adapters by name, unload, folders and their failures.
(The invariants every method shares are in test_conformance.py.)"""
import json

import pytest
import torch
from lora_testutils import base_state, build, inputs, one_thread, output, perturb  # noqa: F401 (autouse fixture)

from peftlab import (
    LoraConfig,
    PeftConfig,
    PeftModel,
    TaskType,
    create_loraplus_param_groups,
    get_peft_model,
    get_peft_model_state_dict,
)
from peftlab.tuners import BaseTunerLayer, ModulesToSaveWrapper
from peftlab.tuners.wrapper import AdapterWrapper


def gpt2_lora(**kw):
    kw = {"r": 4, "target_modules": ["c_attn", "c_proj"], "init_lora_weights": False, **kw}
    return get_peft_model(build("gpt2"), LoraConfig(**kw))


def has_wrappers(model) -> bool:
    return any(isinstance(m, AdapterWrapper) for m in model.modules())


def test_trainable_parameter_count_and_printout(capsys):
    model = get_peft_model(build("mlp"), LoraConfig(r=2, target_modules=["fc1", "fc2"]))
    trainable, total = model.get_nb_trainable_parameters()
    assert trainable == 2 * (8 + 16) + 2 * (16 + 4)
    assert total == trainable + (8 * 16 + 16) + (16 * 4 + 4)
    model.print_trainable_parameters()
    assert capsys.readouterr().out.strip() == (
        f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}")


def test_forward_with_labels_generate_and_attribute_passthrough():
    model = gpt2_lora()
    ids = inputs("gpt2")["input_ids"]
    assert torch.isfinite(model(input_ids=ids, labels=ids).loss)
    assert model.config.n_embd == 32 and model.base_model.model is model.get_base_model()
    greedy = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0)
    adapted = model.generate(input_ids=ids[:2], **greedy)
    assert adapted.shape == (2, ids.shape[1] + 4)
    with model.disable_adapter():
        base = model.generate(input_ids=ids[:2], **greedy)
    assert not torch.equal(adapted, base)
    mixed = model.eval().generate(input_ids=ids[:2], adapter_names=["default", "__base__"], **greedy)
    assert torch.equal(mixed, torch.stack([adapted[0], base[1]]))


@pytest.mark.parametrize("exact", [False, True])
def test_unload_gives_the_original_model_back(exact):
    """Even after a merge: up to float rounding by default, bit for bit with exact_unmerge."""
    before = base_state(build("gpt2"))
    model = gpt2_lora(modules_to_save=["lm_head"])
    perturb(model)
    model.merge_adapter(exact_unmerge=exact)
    plain = model.unload()
    assert not has_wrappers(plain)
    close = torch.equal if exact else (lambda a, b: torch.allclose(a, b, rtol=0, atol=1e-6))
    assert all(close(plain.state_dict()[k], v) for k, v in before.items())


def test_double_injection_is_refused_with_a_fix():
    base = build("gpt2")
    peft_model = get_peft_model(base, LoraConfig(target_modules=["c_attn"]))
    for again in (base, peft_model):
        with pytest.raises(ValueError, match="add_adapter") as err:
            get_peft_model(again, LoraConfig(target_modules=["c_attn"]))
    assert "unload" in str(err.value)
    assert sum(isinstance(m, BaseTunerLayer) for m in base.modules()) == 2   # nothing stacked


def test_adapters_by_name_and_delete_removes_every_trace():
    model = gpt2_lora()
    model.add_adapter("other", LoraConfig(r=2, target_modules=["c_attn", "c_fc"], init_lora_weights=False,
                                          modules_to_save=["ln_f"]))
    assert model.active_adapter == "default"
    default_out = output(model, "gpt2")
    assert all(".other." not in n for n, p in model.named_parameters() if p.requires_grad)
    model.set_adapter("other")
    assert all(".default." not in n for n, p in model.named_parameters() if p.requires_grad)
    other_out = output(model, "gpt2")
    assert not torch.allclose(default_out, other_out, atol=1e-3)
    with pytest.raises(ValueError, match="taken"):
        model.add_adapter("other", LoraConfig(target_modules=["c_attn"]))

    model.delete_adapter("other")
    assert model.active_adapter == "default" and list(model.peft_config) == ["default"]
    assert not any("other" in k for k in model.state_dict())
    for m in model.modules():
        if isinstance(m, AdapterWrapper):
            assert "other" not in m.adapters
            assert all("other" not in getattr(m, d) for d in m.other_param_names)
    assert not isinstance(model.get_base_model().transformer.h[0].mlp.c_fc, BaseTunerLayer)   # unwrapped
    assert not isinstance(model.get_base_model().transformer.ln_f, ModulesToSaveWrapper)
    torch.testing.assert_close(output(model, "gpt2"), default_out, rtol=0, atol=0)

    model.delete_adapter("default")
    assert model.active_adapter is None and not has_wrappers(model)
    torch.testing.assert_close(output(model, "gpt2"), output(build("gpt2"), "gpt2"), rtol=0, atol=0)
    with pytest.raises(ValueError, match="No adapter named 'default'"):
        model.set_adapter("default")


def test_several_adapters_save_in_subfolders_and_load_adapter(tmp_path):
    model = gpt2_lora()
    model.add_adapter("other", LoraConfig(r=2, target_modules=["c_fc"], init_lora_weights=False))
    outs = {}
    for name in ("default", "other"):
        model.set_adapter(name)
        outs[name] = output(model, "gpt2")
    model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").is_file() and (tmp_path / "other" / "adapter_config.json").is_file()
    loaded = PeftModel.from_pretrained(build("gpt2"), tmp_path)
    loaded.load_adapter(tmp_path / "other", "other")
    for name in ("default", "other"):
        loaded.set_adapter(name)
        torch.testing.assert_close(output(loaded, "gpt2"), outs[name], rtol=0, atol=0)


@pytest.mark.parametrize("damage", ["pickle", "truncated", "unknown_type", "missing", "unexpected", "shape"])
def test_failed_loads_explain_and_leave_the_model_unchanged(tmp_path, damage):
    gpt2_lora().save_pretrained(tmp_path)
    weights, cfg_path = tmp_path / "adapter_model.safetensors", tmp_path / "adapter_config.json"
    config = json.loads(cfg_path.read_text())
    make_base, message = (lambda: build("gpt2")), {
        "pickle": "pickle", "truncated": "corrupted or truncated", "unknown_type": "Unknown peft_type 'BOFT'",
        "missing": "missing weights", "unexpected": "unexpected weights", "shape": "shape mismatches"}[damage]
    if damage == "pickle":
        weights.rename(tmp_path / "adapter_model.bin")
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:200])
    elif damage == "unknown_type":
        cfg_path.write_text(json.dumps({**config, "peft_type": "BOFT"}))
    elif damage == "missing":
        cfg_path.write_text(json.dumps({**config, "target_modules": ["c_attn", "c_proj", "c_fc"]}))
    elif damage == "unexpected":
        cfg_path.write_text(json.dumps({**config, "target_modules": ["c_attn"]}))
    else:   # the same architecture with another hidden size
        from transformers import GPT2Config, GPT2LMHeadModel
        make_base = lambda: GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=64, n_layer=2, n_head=2))  # noqa: E731
    base = make_base()
    before = base_state(base)
    with pytest.raises(ValueError, match=message):
        PeftModel.from_pretrained(base, tmp_path)
    assert not has_wrappers(base) and all(torch.equal(base.state_dict()[k], v) for k, v in before.items())

    model = get_peft_model(make_base(), LoraConfig(target_modules=["c_attn"]))   # load_adapter: all or nothing
    snapshot = base_state(model)
    with pytest.raises(ValueError, match=message):
        model.load_adapter(tmp_path, "broken")
    assert list(model.peft_config) == ["default"] and model.state_dict().keys() == snapshot.keys()


def test_biases_train_with_bias_all_or_lora_only(tmp_path):
    for mode, expected in (("all", 2 * 6 + 1), ("lora_only", 2)):
        model = gpt2_lora(bias=mode, target_modules=["c_attn"])
        biases = [n for n, p in model.named_parameters() if p.requires_grad and n.endswith("bias")]
        assert len(biases) == expected, (mode, biases)
        saved = get_peft_model_state_dict(model)
        assert sum(k.endswith("bias") for k in saved) == expected


def test_loraplus_gives_b_a_larger_learning_rate():
    model = get_peft_model(build("llama"), LoraConfig(target_modules=["q_proj", "embed_tokens"], use_dora=True))
    groups = create_loraplus_param_groups(model, lr=1e-3, loraplus_lr_ratio=16)
    names = {id(p): n for n, p in model.named_parameters()}
    rest, b = groups
    assert b["lr"] == pytest.approx(16e-3) and rest["lr"] == 1e-3
    assert all(".lora_B." in names[id(p)] or ".lora_embedding_B." in names[id(p)] for p in b["params"])
    assert len(b["params"]) == 3 and len(rest["params"]) == 3 + 3   # A and DoRA magnitude, x3
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in model.parameters())
    torch.optim.AdamW(groups)   # valid optimizer groups


def test_config_round_trip_and_refusals(tmp_path):
    cfg = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj"], use_rslora=True, task_type=TaskType.CAUSAL_LM)
    assert cfg.task_type == "CAUSAL_LM" and type(cfg.task_type) is str
    cfg.save_pretrained(tmp_path)
    assert PeftConfig.from_pretrained(tmp_path) == cfg == LoraConfig.from_dict(cfg.to_dict())
    data = {**cfg.to_dict(), "peft_version": "0.21.2", "loftq_config": {}, "use_qalora": False,
            "megatron_config": None}
    assert PeftConfig.from_dict(data) == cfg   # fields peftlab does not use, switched off: ignored
    with pytest.raises(ValueError, match=r"layer_replication=\[\[0, 1\]\].*silently"):
        PeftConfig.from_dict({**data, "layer_replication": [[0, 1]]})
    implemented = "ADALORA, BITFIT, BOTTLENECK, FOURIERFT, HRA, IA3, LN_TUNING, LOHA, LOKR, LORA, OFT"
    with pytest.raises(ValueError, match=f"peftlab implements: {implemented}"):
        PeftConfig.from_dict({**data, "peft_type": "NOPE"})
    with pytest.raises(ValueError, match="not implemented in peftlab"):
        LoraConfig(init_lora_weights="olora")
    with pytest.raises(ValueError, match="bias"):
        LoraConfig(bias="some")
    with pytest.raises(FileNotFoundError, match="not a PEFT adapter"):
        PeftConfig.from_pretrained(tmp_path / "nowhere")


@pytest.mark.parametrize("name", ["half", "train", "a.b", ""])
def test_an_adapter_name_that_cannot_key_the_weights_is_refused_clearly(name):
    model = get_peft_model(build("llama"), LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(ValueError, match="cannot be used"):
        model.add_adapter(name, LoraConfig(r=2, target_modules=["q_proj"]))
    assert list(model.peft_config) == ["default"]
    with pytest.raises(ValueError, match="cannot be used"):
        model.add_weighted_adapter(["default"], [1.0], name, combination_type="linear")
