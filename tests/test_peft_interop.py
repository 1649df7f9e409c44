"""Interop with Hugging Face `peft` (the oracle): same weights, same logits, both directions."""
import peft
import pytest
import torch
from lora_testutils import build, output, perturb, one_thread  # noqa: F401 (autouse fixture)

import peftlab

# peft's notices about what it adjusts (fan_in_fan_out for Conv1D, saving embeddings) are expected here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:peft.*", "ignore::FutureWarning:transformers.*")

# Each architecture with targets that cover its layer types (GPT-2: Conv1D and an embedding;
# Llama: embed_tokens, which makes peft save the whole embedding matrix too).
SETUPS = {
    "gpt2": dict(target_modules=["c_attn", "c_fc", "wpe"]),
    "llama": dict(target_modules=["q_proj", "v_proj", "down_proj", "embed_tokens"]),
    "opt": dict(target_modules=["q_proj", "v_proj", "fc1"]),
    "bert": dict(target_modules=["query", "value", "word_embeddings"], modules_to_save=["classifier"],
                 task_type="SEQ_CLS"),
    "mlp": dict(target_modules=["fc1", "fc2"]),
}
VARIANTS = {"lora": {}, "rslora": {"use_rslora": True}, "dora": {"use_dora": True}}
CASES = [(a, v) for a in ("gpt2", "llama", "opt", "bert") for v in VARIANTS] + [("mlp", "lora"), ("mlp", "dora")]


def config_kwargs(arch, variant):
    return dict(r=4, lora_alpha=8, init_lora_weights=False, **SETUPS[arch], **VARIANTS[arch and variant])


@pytest.mark.parametrize("arch,variant", CASES)
def test_peftlab_folder_loads_in_peft(tmp_path, arch, variant):
    ours = peftlab.get_peft_model(build(arch), peftlab.LoraConfig(**config_kwargs(arch, variant)))
    perturb(ours)
    expected = output(ours.eval(), arch)
    ours.save_pretrained(tmp_path)
    assert isinstance(peft.PeftConfig.from_pretrained(tmp_path), peft.LoraConfig)
    theirs = peft.PeftModel.from_pretrained(build(arch), tmp_path).eval()
    torch.testing.assert_close(output(theirs, arch), expected, rtol=0, atol=1e-5)
    with theirs.disable_adapter():   # and the adapter really changed the output
        assert not torch.allclose(output(theirs, arch), expected, atol=1e-3)


@pytest.mark.parametrize("arch,variant", CASES)
def test_peft_folder_loads_in_peftlab(tmp_path, arch, variant):
    theirs = peft.get_peft_model(build(arch), peft.LoraConfig(**config_kwargs(arch, variant)))
    perturb(theirs)
    expected = output(theirs.eval(), arch)
    theirs.save_pretrained(tmp_path)
    ours = peftlab.PeftModel.from_pretrained(build(arch), tmp_path)
    torch.testing.assert_close(output(ours, arch), expected, rtol=0, atol=1e-5)
    with ours.disable_adapter():
        assert not torch.allclose(output(ours, arch), expected, atol=1e-3)


@pytest.mark.parametrize("arch", ["gpt2", "bert"])
def test_in_memory_state_dict_keys_match_peft(arch):
    kwargs = config_kwargs(arch, "lora")
    ours = peftlab.get_peft_model(build(arch), peftlab.LoraConfig(**kwargs)).state_dict().keys()
    theirs = peft.get_peft_model(build(arch), peft.LoraConfig(**kwargs)).state_dict().keys()
    assert set(ours) == set(theirs)


def test_dora_gradients_match_peft(tmp_path):
    """Same forward is not enough: DoRA's detached norm shows in the gradients."""
    ours = peftlab.get_peft_model(build("llama"), peftlab.LoraConfig(**config_kwargs("llama", "dora")))
    perturb(ours)
    ours.save_pretrained(tmp_path)
    theirs = peft.PeftModel.from_pretrained(build("llama"), tmp_path, is_trainable=True)
    ids = torch.randint(3, 100, (2, 6), generator=torch.Generator().manual_seed(0))
    grads = []
    for model in (ours, theirs):
        model.train()
        model(input_ids=ids, labels=ids).loss.backward()
        grads.append({n.replace("lora_magnitude_vector.default.weight", "lora_magnitude_vector.default"): p.grad
                      for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for name, g in grads[0].items():
        torch.testing.assert_close(g, grads[1][name], rtol=1e-4, atol=1e-6, msg=name)


def test_pissa_adapter_round_trips_through_peft(tmp_path):
    """PiSSA's saved adapter only works on the residual base: both libraries rebuild it from
    the SVD of the original weights when they load the config, so the logits agree."""
    kwargs = dict(r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights="pissa")
    ours = peftlab.get_peft_model(build("llama"), peftlab.LoraConfig(**kwargs))
    perturb(ours)
    expected = output(ours.eval(), "llama")
    ours.save_pretrained(tmp_path)
    theirs = peft.PeftModel.from_pretrained(build("llama"), tmp_path).eval()
    torch.testing.assert_close(output(theirs, "llama"), expected, rtol=0, atol=1e-5)
