"""Soft-prompt interop with Hugging Face `peft` (the oracle): folders saved by one library load in
the other and give the same logits (fp32, atol 1e-5) and the same greedy generations.

Compared on unpadded and right-padded inputs only: with left padding peft shifts the positions
of the real tokens by the number of pads (peftlab does not; see test_soft_prompts.py).

Generations are compared with greedy decoding by peft's *forward* (one full pass per token),
not with peft's generate: under transformers 5.24, peft 0.21.2's generate with soft prompts is
wrong (measured: with prefix tuning its output is the base model's on GPT-2 and Llama; with
prompt tuning / P-tuning tokens after the first differ from its own forward). Its
prepare_inputs_for_generation looks for `past_key_values`, which transformers now calls `cache`.
peft's forward is right, and it is what these tests use as the oracle."""
import peft
import pytest
import torch
from lora_testutils import one_thread  # noqa: F401 (autouse fixture)
from soft_prompt_testutils import CASES, METHODS, build, config, gqa_llama, offset, pad, real_logits, sequences

import peftlab

# peft still passes `past_key_values`, which transformers 5 renamed `cache`: expected warnings here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:peft.*", "ignore::FutureWarning:transformers.*",
                                        "ignore:`past_key_values` is deprecated:FutureWarning")
GREEDY = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)


@torch.no_grad()
def greedy_by_forward(model, ids: torch.Tensor, steps: int) -> torch.Tensor:
    """Greedy decoding of an unpadded batch, one full forward per token (no cache; no stop at
    eos, so a generation that ended early would fail the comparison, never pass it wrongly)."""
    for _ in range(steps):
        ids = torch.cat([ids, model(input_ids=ids).logits[:, -1:].argmax(-1)], dim=1)
    return ids


def assert_same_behaviour(ours, theirs, method):
    """Same logits (unpadded: every position, virtual ones included; right-padded: the real
    positions), peftlab's greedy generate = greedy decoding with peft's forward, and the
    adapter does change the output."""
    ours.eval(), theirs.eval()
    unpadded = torch.stack(sequences((5, 5, 5)))
    expected = ours(input_ids=unpadded).logits
    torch.testing.assert_close(theirs(input_ids=unpadded).logits, expected, rtol=0, atol=1e-5)
    ids, mask = pad(sequences(), "right")
    for got, want in zip(real_logits(theirs(input_ids=ids, attention_mask=mask).logits, mask, method),
                         real_logits(ours(input_ids=ids, attention_mask=mask).logits, mask, method)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert torch.equal(ours.generate(input_ids=unpadded, **GREEDY), greedy_by_forward(theirs, unpadded, 4))
    with theirs.disable_adapter():
        base = theirs(input_ids=unpadded).logits
    assert not torch.allclose(base, expected[:, offset(method):], atol=1e-3)


@pytest.mark.parametrize("arch,method", CASES)
def test_peftlab_folder_loads_in_peft(tmp_path, arch, method):
    ours = peftlab.get_peft_model(build(arch), config(peftlab, method))
    ours.save_pretrained(tmp_path)
    loaded_config = peft.PeftConfig.from_pretrained(tmp_path)
    assert type(loaded_config).__name__ == type(config(peft, method)).__name__
    assert_same_behaviour(ours, peft.PeftModel.from_pretrained(build(arch), tmp_path), method)


@pytest.mark.parametrize("arch,method", CASES)
def test_peft_folder_loads_in_peftlab(tmp_path, arch, method):
    theirs = peft.get_peft_model(build(arch), config(peft, method))
    theirs.save_pretrained(tmp_path)
    assert_same_behaviour(peftlab.PeftModel.from_pretrained(build(arch), tmp_path), theirs, method)


@pytest.mark.parametrize("projection", [False, True])
def test_prefix_on_grouped_query_attention_with_explicit_head_dim_both_ways(tmp_path, projection):
    ours = peftlab.get_peft_model(gqa_llama(), peftlab.PrefixTuningConfig(num_virtual_tokens=4,
                                                                          prefix_projection=projection))
    ours.save_pretrained(tmp_path / "ours")
    assert_same_behaviour(ours, peft.PeftModel.from_pretrained(gqa_llama(), tmp_path / "ours"), "prefix")
    theirs = peft.get_peft_model(gqa_llama(), peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4,
                                                                      prefix_projection=projection))
    theirs.save_pretrained(tmp_path / "theirs")
    assert_same_behaviour(peftlab.PeftModel.from_pretrained(gqa_llama(), tmp_path / "theirs"), theirs, "prefix")


@pytest.mark.parametrize("method", list(METHODS))
def test_trainable_encoder_parameters_match_peft_by_name_and_count(method):
    """The encoders' parameters have peft's names and sizes. peft keeps them on the PeftModel;
    peftlab keeps them in its tuner, PeftModel.base_model, with every other method's weights."""
    def trainable(model, prefix=""):
        return {n.removeprefix(prefix): p.numel() for n, p in model.named_parameters() if p.requires_grad}
    ours = trainable(peftlab.get_peft_model(build("llama"), config(peftlab, method)), prefix="base_model.")
    theirs = trainable(peft.get_peft_model(build("llama"), config(peft, method)))
    assert ours == theirs and ours
