"""Soft prompts (prompt tuning, P-tuning MLP/LSTM, prefix tuning with and without projection) on
GPT-2, Llama (grouped-query attention) and OPT: loss, padding, generation, the saved layout,
adapters by name, initialisation, and the errors for inputs and models they refuse. (The
invariants every method shares are in test_conformance.py.)"""
import json

import pytest
import torch
import torch.nn.functional as F
from lora_testutils import base_state, one_thread  # noqa: F401 (autouse fixture)
from safetensors.torch import load_file
from soft_prompt_testutils import (
    CASES,
    METHODS,
    VOCAB,
    P,
    build,
    config,
    gqa_llama,
    offset,
    pad,
    real_logits,
    sequences,
)
from transformers import GPT2LMHeadModel, T5Config, T5ForConditionalGeneration

import peftlab
from peftlab import LoraConfig, PeftModel, PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig, get_peft_model

PEFT_TYPES = {"prompt": "PROMPT_TUNING", "ptune_mlp": "P_TUNING", "ptune_lstm": "P_TUNING",
              "prefix": "PREFIX_TUNING", "prefix_proj": "PREFIX_TUNING"}
GREEDY = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)


def make(arch, method, seed=0):
    return get_peft_model(build(arch, seed), config(peftlab, method))


@torch.no_grad()
def greedy_by_hand(model, seq: torch.Tensor, steps: int, eos: int = 2, pad_id: int = 0) -> torch.Tensor:
    """Greedy decoding of one sequence with one full forward per token (no cache), stopping at
    eos and padding after it, as `generate` does."""
    seq, done = seq[None], False
    for _ in range(steps):
        nxt = pad_id if done else int(model(input_ids=seq).logits[0, -1].argmax())
        done = done or nxt == eos
        seq = torch.cat([seq, torch.tensor([[nxt]])], dim=1)
    return seq[0]


# --- the invariants, on every architecture and method ---------------------------------------------
@pytest.mark.parametrize("arch,method", CASES)
def test_loss_has_exactly_the_real_targets(arch, method):
    model = make(arch, method)
    ids, mask = pad(sequences(), "right")
    labels = ids.masked_fill(mask == 0, -100)
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    logits = out.logits[:, offset(method):]                      # virtual positions left out
    assert logits.shape == (*ids.shape, VOCAB)
    by_hand = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, by_hand, rtol=0, atol=1e-6)


@pytest.mark.parametrize("arch,method", CASES)
def test_left_or_right_padded_batch_gives_each_example_its_own_logits(arch, method):
    model = make(arch, method)
    seqs = sequences()
    alone = [model(input_ids=seq[None]).logits[0, offset(method):] for seq in seqs]
    for side in ("left", "right"):
        ids, mask = pad(seqs, side)
        batch = real_logits(model(input_ids=ids, attention_mask=mask).logits, mask, method)
        for got, want in zip(batch, alone):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-5, msg=lambda m, side=side: f"{side} padding: {m}")


@pytest.mark.parametrize("arch,method", CASES)
def test_batched_greedy_generation_is_each_example_decoded_alone_without_cache(arch, method):
    model = make(arch, method)
    seqs = sequences()
    ids, mask = pad(seqs, "left")
    out = model.generate(input_ids=ids, attention_mask=mask, **GREEDY)
    assert out.shape == (len(seqs), ids.shape[1] + 4) and torch.equal(out[:, :ids.shape[1]], ids)
    for i, seq in enumerate(seqs):
        assert torch.equal(out[i, ids.shape[1]:], greedy_by_hand(model, seq, 4)[len(seq):])


@pytest.mark.parametrize("arch,method", [(a, m) for a, m in CASES if m in ("prompt", "prefix")])
def test_sampled_generation_batched_with_several_sequences_per_prompt(arch, method):
    model = make(arch, method)
    ids, mask = pad(sequences(), "left")
    sample = dict(max_new_tokens=4, do_sample=True, num_return_sequences=2, pad_token_id=0)
    torch.manual_seed(0)
    first = model.generate(input_ids=ids, attention_mask=mask, **sample)
    torch.manual_seed(0)
    again = model.generate(input_ids=ids, attention_mask=mask, **sample)
    assert first.shape == (6, ids.shape[1] + 4) and torch.equal(first, again)
    assert torch.equal(first[:, :ids.shape[1]], ids.repeat_interleave(2, dim=0))
    top1 = model.generate(input_ids=ids, attention_mask=mask, **{**sample, "top_k": 1})   # sampling from one token
    greedy = model.generate(input_ids=ids, attention_mask=mask, **GREEDY)
    assert torch.equal(top1, greedy.repeat_interleave(2, dim=0))


@pytest.mark.parametrize("arch,method", CASES)
def test_save_load_round_trip_in_peft_layout(tmp_path, arch, method):
    model = make(arch, method).eval()
    ids, mask = pad(sequences(), "left")
    expected = model(input_ids=ids, attention_mask=mask).logits
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    prefix_on_gqa = arch == "llama" and method.startswith("prefix")   # 1 key/value head of 16
    assert saved["peft_type"] == PEFT_TYPES[method] and saved["task_type"] == "CAUSAL_LM"
    assert (saved["num_virtual_tokens"], saved["num_layers"], saved["num_transformer_submodules"]) == (P, 2, 1)
    assert (saved["token_dim"], saved["num_attention_heads"]) == ((16, 1) if prefix_on_gqa else (32, 2))
    assert saved["inference_mode"] is True
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    width = 2 * 2 * saved["token_dim"] if method.startswith("prefix") else 32
    assert list(tensors) == ["prompt_embeddings"] and tensors["prompt_embeddings"].shape == (P, width)

    loaded = PeftModel.from_pretrained(build(arch), tmp_path)
    assert not any(p.requires_grad for p in loaded.parameters())
    torch.testing.assert_close(loaded(input_ids=ids, attention_mask=mask).logits, expected, rtol=0, atol=1e-6)
    assert torch.equal(loaded.generate(input_ids=ids, attention_mask=mask, **GREEDY),
                       model.generate(input_ids=ids, attention_mask=mask, **GREEDY))


@pytest.mark.parametrize("method", list(METHODS))
def test_loading_for_training_resumes_tables_and_refuses_encoders(tmp_path, method):
    make("gpt2", method).save_pretrained(tmp_path)
    if method in ("prompt", "prefix"):   # the saved table is the trained parameter itself
        model = PeftModel.from_pretrained(build("gpt2"), tmp_path, is_trainable=True)
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        assert trainable == ["base_model.prompt_encoder.default.embedding.weight"]
        return
    with pytest.raises(ValueError, match="cannot be trained further"):
        PeftModel.from_pretrained(build("gpt2"), tmp_path, is_trainable=True)
    if method.startswith("ptune"):       # the way out the error offers: keep training the tokens
        model = PeftModel.from_pretrained(build("gpt2"), tmp_path, is_trainable=True,
                                          config=PromptTuningConfig(num_virtual_tokens=P))
        frozen = PeftModel.from_pretrained(build("gpt2"), tmp_path)
        ids = sequences()[0][None]
        torch.testing.assert_close(model(input_ids=ids).logits, frozen(input_ids=ids).logits, rtol=0, atol=0)


# --- geometry: grouped-query attention, explicit head_dim ------------------------------------------
@pytest.mark.parametrize("projection", [False, True])
def test_prefix_has_the_cache_shape_under_grouped_query_attention(projection):
    model = get_peft_model(gqa_llama(), PrefixTuningConfig(num_virtual_tokens=P, prefix_projection=projection))
    cfg = model.peft_config["default"]
    assert (cfg.num_attention_heads, cfg.token_dim, cfg.encoder_hidden_size) == (2, 8, 8)
    seqs = sequences()
    ids, mask = pad(seqs, "left")
    out = model(input_ids=ids, attention_mask=mask, use_cache=True)
    assert out.cache.layers[0].keys.shape == (3, 2, P + ids.shape[1], 4)   # (batch, kv heads, positions, head_dim)
    for seq, got in zip(seqs, real_logits(out.logits, mask, "prefix")):
        torch.testing.assert_close(got, model(input_ids=seq[None]).logits[0], rtol=0, atol=1e-5)
    generated = model.generate(input_ids=ids, attention_mask=mask, **GREEDY)
    assert torch.equal(generated[0, ids.shape[1]:], greedy_by_hand(model, seqs[0], 4)[len(seqs[0]):])


# --- other ways in -----------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["prompt", "prefix"])
def test_a_hand_written_decoding_loop_with_the_returned_cache(method):
    model = make("llama", method)
    ids = sequences()[0][None]
    first = model(input_ids=ids, use_cache=True)
    nxt = first.logits[:, -1:].argmax(-1)
    step = model(input_ids=nxt, cache=first.cache, attention_mask=torch.ones(1, ids.shape[1] + 1, dtype=torch.long))
    full = model(input_ids=torch.cat([ids, nxt], dim=1)).logits[:, -1]
    torch.testing.assert_close(step.logits[:, -1], full, rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", ["prompt", "prefix"])
def test_explicit_position_ids_count_the_real_tokens_from_zero(method):
    model = make("gpt2", method)
    ids = sequences()[0][None]
    numbered = model(input_ids=ids, position_ids=torch.arange(ids.shape[1])[None]).logits
    torch.testing.assert_close(numbered, model(input_ids=ids).logits, rtol=0, atol=1e-6)


def test_inputs_embeds_work_like_input_ids():
    model = make("opt", "ptune_lstm")
    ids = sequences()[0][None]
    embeds = model.get_base_model().get_input_embeddings()(ids)
    torch.testing.assert_close(model(inputs_embeds=embeds).logits, model(input_ids=ids).logits, rtol=0, atol=1e-6)


def test_beam_search_runs_with_the_virtual_tokens():
    model = make("llama", "prompt")
    ids, mask = pad(sequences(), "left")
    out = model.generate(input_ids=ids, attention_mask=mask, num_beams=3, **GREEDY)
    assert out.shape == (3, ids.shape[1] + 4) and torch.equal(out[:, :ids.shape[1]], ids)


# --- the PeftModel API ----------------------------------------------------------------------------
def test_adapters_by_name_counting_and_what_soft_prompts_refuse(capsys):
    model = make("gpt2", "prompt")
    ids = sequences()[0][None]
    default_out = model(input_ids=ids).logits
    model.add_adapter("other", PromptTuningConfig(num_virtual_tokens=2))
    assert torch.equal(model(input_ids=ids).logits, default_out)   # added, not active
    model.set_adapter("other")
    assert model(input_ids=ids).logits.shape[1] == 2 + ids.shape[1]
    trainable_names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable_names == {"base_model.prompt_encoder.other.embedding.weight"}
    trainable, total = model.get_nb_trainable_parameters()
    assert trainable == 2 * 32 and total == sum(p.numel() for p in build("gpt2").parameters()) + (P + 2) * 32
    model.print_trainable_parameters()
    assert capsys.readouterr().out.startswith("trainable params: 64 || all params: ")

    with pytest.raises(ValueError, match="cannot be merged"):
        model.merge_and_unload()
    with pytest.raises(ValueError, match="layer methods only"):
        model.eval()(input_ids=ids, adapter_names=["other"])
    with pytest.raises(ValueError, match="one method"):
        model.add_adapter("lora", LoraConfig(target_modules=["c_attn"]))
    model.delete_adapter("other")
    assert model.active_adapter == "default" and list(model.prompt_encoder) == ["default"]
    assert torch.equal(model(input_ids=ids).logits, default_out)
    plain = model.unload()
    assert isinstance(plain, GPT2LMHeadModel) and len(model.prompt_encoder) == 0 and not model.peft_config
    assert torch.equal(plain(input_ids=ids).logits, build("gpt2")(input_ids=ids).logits)


def test_the_callers_config_is_not_changed_and_peft_fields_are_filled():
    cfg = PrefixTuningConfig(num_virtual_tokens=P)
    model = get_peft_model(build("llama"), cfg)
    assert cfg.token_dim is None and cfg.task_type is None
    filled = model.peft_config["default"]
    geometry = (filled.token_dim, filled.num_attention_heads, filled.num_layers, filled.task_type)
    assert geometry == (16, 1, 2, "CAUSAL_LM")


# --- initialisation -------------------------------------------------------------------------------
def test_random_init_has_the_scale_of_the_models_embeddings():
    model = get_peft_model(build("gpt2"), PromptTuningConfig(num_virtual_tokens=16))
    prompt, table = model.prompt_encoder["default"].embedding.weight.detach(), model.get_input_embeddings().weight
    assert table.std() < 0.05   # GPT-2's init: N(0, 0.02^2); peft's prompt would be N(0, 1)
    assert 0.8 < float(prompt.std() / table.std()) < 1.2


def test_sample_vocab_init_takes_rows_of_the_embedding_matrix():
    model = get_peft_model(build("opt"), PromptTuningConfig(num_virtual_tokens=P, prompt_tuning_init="SAMPLE_VOCAB"))
    prompt, table = model.prompt_encoder["default"].embedding.weight, model.get_input_embeddings().weight
    assert all((table == row).all(dim=1).any() for row in prompt)


def test_text_init_on_the_bundled_model_from_a_tokenizer_object_or_a_local_folder():
    from peftlab.workbook.zoo import load_base_model, model_path
    base, tokenizer = load_base_model()
    text = "The capital of"
    ids = tokenizer(text)["input_ids"]                                   # with <bos>, as peft
    want = base.get_input_embeddings().weight[(ids * 8)[:8]]
    cfg = PromptTuningConfig(num_virtual_tokens=8, prompt_tuning_init="TEXT", prompt_tuning_init_text=text)
    model = get_peft_model(base, cfg, tokenizer=tokenizer)
    assert len(ids) < 8 and torch.equal(model.prompt_encoder["default"].embedding.weight, want)
    assert model.peft_config["default"].tokenizer_name_or_path == tokenizer.name_or_path   # peft needs it
    model.delete_adapter("default")
    cfg.tokenizer_name_or_path = str(model_path())
    model.add_adapter("folder", cfg)
    assert torch.equal(model.prompt_encoder["folder"].embedding.weight, want)
    seqs = [torch.tensor(tokenizer(t)["input_ids"]) for t in ("The capital of France is", "Paris")]
    model.set_adapter("folder")
    padded, mask = pad(seqs, "left", pad_id=tokenizer.pad_token_id)
    batch = model(input_ids=padded, attention_mask=mask).logits[:, 8:]
    for i, seq in enumerate(seqs):
        alone = model(input_ids=seq[None]).logits[0, 8:]
        torch.testing.assert_close(batch[i][mask[i].bool()], alone, rtol=0, atol=1e-5)


def test_text_init_without_a_usable_tokenizer_says_how_to_give_one():
    with pytest.raises(ValueError, match="prompt_tuning_init_text"):
        PromptTuningConfig(num_virtual_tokens=P, prompt_tuning_init="TEXT")
    cfg = PromptTuningConfig(num_virtual_tokens=P, prompt_tuning_init="TEXT", prompt_tuning_init_text="hi")
    with pytest.raises(ValueError, match="tokenizer=tokenizer"):
        get_peft_model(build("gpt2"), cfg)
    cfg.tokenizer_name_or_path = "gpt2"   # a hub name: never downloaded
    with pytest.raises(ValueError, match="not a local folder"):
        get_peft_model(build("gpt2"), cfg)


# --- refusals -------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["prompt", "prefix"])
def test_inputs_longer_than_the_context_are_refused_with_the_limit(method):
    model = make("gpt2", method)                       # n_positions = 32, with P = 4 virtual tokens
    assert model(input_ids=torch.randint(3, VOCAB, (1, 28))).logits.shape[1] == 28 + offset(method)
    with pytest.raises(ValueError, match=r"33 positions.*max_position_embeddings.*at most 28 tokens"):
        model(input_ids=torch.randint(3, VOCAB, (1, 29)))
    with pytest.raises(ValueError, match=r"34 positions.*max_position_embeddings.*within 28"):
        model.generate(input_ids=torch.randint(3, VOCAB, (1, 20)), max_new_tokens=10, pad_token_id=0)
    with pytest.raises(ValueError, match="no room"):
        get_peft_model(build("gpt2"), PromptTuningConfig(num_virtual_tokens=32))


class NoCacheGPT2(GPT2LMHeadModel):
    def forward(self, input_ids=None, attention_mask=None, labels=None):   # no cache argument
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, labels=labels)


@pytest.mark.parametrize("model,error,match", [
    (lambda: build("bert"), ValueError, "not a causal language model"),
    (lambda: build("mlp"), TypeError, "plain torch model"),
    (lambda: T5ForConditionalGeneration(T5Config(vocab_size=VOCAB, d_model=16, d_ff=32, d_kv=8, num_layers=1,
                                                 num_heads=2)), ValueError, "encoder-decoder"),
    (lambda: NoCacheGPT2(build("gpt2").config), ValueError, "takes no key/value cache"),
])
def test_models_that_cannot_take_soft_prompts_are_refused_with_a_way_out(model, error, match):
    with pytest.raises(error, match=match):
        get_peft_model(model(), PrefixTuningConfig(num_virtual_tokens=P))


def test_an_adapter_for_another_model_or_a_bad_config_is_refused(tmp_path):
    make("gpt2", "prefix").save_pretrained(tmp_path)   # token_dim 32; gqa_llama's keys are 2 heads of 4
    with pytest.raises(ValueError, match="token_dim=32, but this model has token_dim=8"):
        PeftModel.from_pretrained(gqa_llama(), tmp_path)
    with pytest.raises(ValueError, match="positive integer"):
        PromptEncoderConfig(num_virtual_tokens=0)
    with pytest.raises(ValueError, match="'MLP' or 'LSTM'"):
        PromptEncoderConfig(num_virtual_tokens=P, encoder_reparameterization_type="GRU")
