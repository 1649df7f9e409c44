"""LoRA against Hugging Face `peft` beyond the folder round trips of test_conformance.py: the
in-memory names, DoRA's gradients (the detached norm shows only there), and which base-model
weights a peft folder may write."""
import warnings

import peft
import pytest
import torch
from conformance_rows import ROWS
from lora_testutils import build, one_thread, perturb  # noqa: F401 (autouse fixture)
from safetensors.torch import load_file, save_file

import peftlab

# peft's notices about what it adjusts (fan_in_fan_out for Conv1D, saving embeddings) are expected here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:peft.*", "ignore::FutureWarning:transformers.*")
EMBEDDING_KEY = "base_model.model.model.embed_tokens.base_layer.weight"


@pytest.mark.parametrize("arch", ["gpt2", "bert"])
def test_in_memory_state_dict_keys_match_peft(arch):
    ours = peftlab.get_peft_model(build(arch), ROWS["lora"].config(peftlab, arch)).state_dict().keys()
    theirs = peft.get_peft_model(build(arch), ROWS["lora"].config(peft, arch)).state_dict().keys()
    assert set(ours) == set(theirs)


def test_dora_gradients_match_peft(tmp_path):
    """Same forward is not enough: DoRA's detached norm shows in the gradients."""
    ours = peftlab.get_peft_model(build("llama"), ROWS["dora"].config(peftlab, "llama"))
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


def test_embedding_weights_peft_saves_are_written_only_where_they_differ_and_with_a_warning(tmp_path):
    """peft saves the whole embedding matrix with an adapter that targets embed_tokens. Loading it
    into the same base changes nothing (no warning); into another base, it is copied, as peft does,
    and a warning says so. Any other base-model tensor in a folder is refused."""
    theirs = peft.get_peft_model(build("llama"), ROWS["lora"].config(peft, "llama"))
    perturb(theirs)
    theirs.save_pretrained(tmp_path)
    assert EMBEDDING_KEY in load_file(tmp_path / "adapter_model.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        peftlab.PeftModel.from_pretrained(build("llama"), tmp_path)
    other_base = build("llama", seed=1)
    with pytest.warns(UserWarning, match="embed_tokens.base_layer.weight.*copied into the model"):
        peftlab.PeftModel.from_pretrained(other_base, tmp_path)
    assert torch.equal(other_base.model.embed_tokens.weight, build("llama").model.embed_tokens.weight)

    tensors = load_file(tmp_path / "adapter_model.safetensors")
    tensors["base_model.model.model.norm.weight"] = torch.zeros(32)
    save_file(tensors, tmp_path / "adapter_model.safetensors")
    base = build("llama")
    with pytest.raises(ValueError, match="unexpected weights: base_model.model.model.norm.weight"):
        peftlab.PeftModel.from_pretrained(base, tmp_path)
    assert torch.equal(base.model.norm.weight, build("llama").model.norm.weight)
