"""Notebook 16's measurements (peftlab/course/symptoms.py) and its checkers: each checker says "not attempted"
for an untouched stub, asks for one of its choices when the answer is none of them, accepts the cause its own
measurement finds and explains a wrong one."""
import json
from pathlib import Path

import pytest
import torch
from lora_testutils import build, inputs, one_thread  # noqa: F401  (one_thread: a fixture)

from peftlab import LoraConfig, PromptTuningConfig, get_peft_model
from peftlab.course import failures, symptoms
from peftlab.course.exercises import nb16_when_peft_goes_wrong as nb16
from peftlab.tuners import tuner
from peftlab.workbook import PromptTargetCollator, load_base_model, load_task

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "16_when_peft_goes_wrong.ipynb"


def stub(*_):
    raise NotImplementedError


@pytest.fixture(scope="module")
def tokenizer():
    return load_base_model()[1]


@pytest.fixture(scope="module")
def batch(tokenizer):
    return PromptTargetCollator(tokenizer)(list(load_task("sentiment")["test"])[:16])


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """A saved LoRA adapter with a non-zero B and dropout 0.1: what the checkers of labs 1, 9 and 10 read."""
    folder = tmp_path_factory.mktemp("adapter")
    torch.manual_seed(0)
    get_peft_model(load_base_model()[0], LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                    lora_dropout=0.1, init_lora_weights=False)).save_pretrained(folder)
    return folder


def last_line(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


# --- the measurements ------------------------------------------------------------------------------------
def test_bf16_spacing_is_the_gap_to_the_next_bfloat16_number():
    values = torch.randn(1000, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16) * 10
    up = torch.nextafter(values.abs(), torch.full_like(values, float("inf")))
    torch.testing.assert_close(symptoms.bf16_spacing(values), (up.float() - values.abs().float()), rtol=0, atol=0)


def test_saved_activations_exclude_parameters_and_grow_with_dropout():
    def lora(dropout):
        torch.manual_seed(0)
        return get_peft_model(build("llama"), LoraConfig(r=2, target_modules="all-linear", lora_dropout=dropout))
    batch = inputs("llama") | {"labels": inputs("llama")["input_ids"]}
    plain, dropped = lora(0.0), lora(0.5)
    assert symptoms.saved_activation_bytes(plain, batch) == symptoms.saved_activation_bytes(plain, batch)
    assert symptoms.saved_activation_bytes(dropped, batch) > symptoms.saved_activation_bytes(plain, batch)
    assert not plain.training and all(p.grad is None for p in plain.parameters()), "mode restored, gradients cleared"


def test_a_lora_step_does_about_two_thirds_of_the_arithmetic_of_a_full_step(batch):
    full = load_base_model()[0].requires_grad_(True)
    lora = get_peft_model(load_base_model()[0], LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    ratio = symptoms.training_step_flops(lora, batch) / symptoms.training_step_flops(full, batch)
    assert 0.6 < ratio < 0.75


def test_one_step_change_steps_a_copy_and_grows_with_the_rate(batch):
    model = failures.lora_model(4, 8)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    small, large = (symptoms.one_step_change(model, batch, lr) for lr in (1e-4, 1e-3))
    assert 0 < small < large
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters()), "the caller's model is untouched"


def test_hand_loop_trains_what_its_optimizer_holds(tokenizer):
    model = failures.lora_model(4, 8)
    rows, collate = load_task("sentiment")["train"], PromptTargetCollator(tokenizer)
    assert len(symptoms.untouched_lora_layers(model)) == 8, "B starts at zero everywhere"
    stale = torch.optim.AdamW(load_base_model()[0].parameters(), lr=1e-2)
    symptoms.hand_loop(model, stale, rows, collate, steps=2)
    assert len(symptoms.untouched_lora_layers(model)) == 8
    right = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = symptoms.hand_loop(model, right, rows, collate, steps=5)
    assert symptoms.untouched_lora_layers(model) == [] and losses[-1] < losses[0]


def test_gradient_free_parameters_names_what_a_backward_pass_missed(batch):
    with pytest.warns(UserWarning, match="None of the inputs have requires_grad"):
        missed = symptoms.gradient_free_parameters(failures.checkpointed_lora(), batch)
    assert len(missed) == 16 and all("q_proj" in n or "v_proj" in n for n in missed), "A and B of 8 layers"
    hooked = failures.checkpointed_lora(input_hook=True)
    assert symptoms.gradient_free_parameters(hooked, batch) == []
    assert all(p.grad is None for p in hooked.parameters()), "gradients cleared afterwards"


def test_entry_matches_uses_peft_s_rule_for_a_list():
    matches = symptoms.entry_matches(build("llama"), ["q_proj", "proj", "self_attn.v_proj", "v_projj"])
    assert matches == {"q_proj": 2, "proj": 0, "self_attn.v_proj": 2, "v_projj": 0}


def test_modules_in_training_mode_lists_every_module_that_trains():
    model = build("mlp")
    assert symptoms.modules_in_training_mode(model) == []
    model.fc1.train()
    assert symptoms.modules_in_training_mode(model) == ["fc1"]


def test_greedy_without_cache_is_what_generate_writes():
    model = build("llama")
    ids = inputs("llama", batch=1)["input_ids"]
    with torch.no_grad():
        generated = model.generate(input_ids=ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert torch.equal(symptoms.greedy_without_cache(model, ids, 4), generated)


# --- the checkers -------------------------------------------------------------------------------------------
CHOICES = [(nb16.check_merge_cause, nb16.MERGE_CAUSES, 2), (nb16.check_memory_term, nb16.MEMORY_TERMS, 3),
           (nb16.check_target_cause, nb16.TARGET_CAUSES, 1), (nb16.check_generate_cause, nb16.GENERATE_CAUSES, 1),
           (nb16.check_alpha_step, nb16.STEP_BUCKETS, 1), (nb16.check_rate_gap, nb16.RATE_BUCKETS, 2),
           (nb16.check_checkpointing_cause, nb16.CHECKPOINT_CAUSES, 1),
           (nb16.check_dropout_cause, nb16.DROPOUT_CAUSES, 1), (nb16.check_twice_factor, nb16.TWICE_FACTORS, 2)]


@pytest.fixture(scope="module")
def prompted():
    torch.manual_seed(0)
    return get_peft_model(load_base_model()[0], PromptTuningConfig(num_virtual_tokens=8, task_type="CAUSAL_LM"))


def arguments(checker, adapter, batch, tokenizer, prompted) -> tuple:
    """Everything after the answer, as the notebook passes it."""
    prompts = [row["prompt"] for row in list(load_task("sentiment")["test"])[:6]]
    return {nb16.check_merge_cause: (adapter,), nb16.check_memory_term: (batch,), nb16.check_target_cause: (),
            nb16.check_generate_cause: (prompted, tokenizer, prompts), nb16.check_alpha_step: (batch,),
            nb16.check_rate_gap: (batch,), nb16.check_checkpointing_cause: (batch,),
            nb16.check_dropout_cause: (adapter, batch), nb16.check_twice_factor: (adapter,)}[checker]


@pytest.mark.parametrize("checker,choices,right", CHOICES, ids=[c[0].__name__ for c in CHOICES])
def test_checkers_judge_the_cause_their_measurement_finds(checker, choices, right, adapter, batch, tokenizer,
                                                          prompted, capsys):
    rest = arguments(checker, adapter, batch, tokenizer, prompted)
    assert not checker(None, *rest)
    assert "not attempted" in last_line(capsys)
    assert not checker("something else", *rest)
    assert "copy one of these exactly" in capsys.readouterr().out
    assert checker(choices[right], *rest)
    assert "as you predicted" in last_line(capsys)
    wrong = choices[(right + 1) % len(choices)]
    assert not checker(wrong, *rest)
    assert f"{choices[right]!r}, not {wrong!r}" in last_line(capsys)


def test_the_optimizer_fix_must_train_every_lora_layer(capsys):
    assert not nb16.check_optimizer_fix(stub)
    assert "not attempted" in last_line(capsys)
    assert not nb16.check_optimizer_fix(lambda model: [p for p in model.parameters() if p.requires_grad])
    assert "return a torch optimizer" in last_line(capsys)
    assert not nb16.check_optimizer_fix(lambda model: torch.optim.AdamW(load_base_model()[0].parameters()))
    assert "holds none of the adapter's parameters" in last_line(capsys)
    assert not nb16.check_optimizer_fix(lambda model: torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=0.0))
    assert "never moved" in last_line(capsys)
    assert nb16.check_optimizer_fix(lambda model: torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-2))
    assert "moved and the loss fell" in last_line(capsys)
    assert nb16.check_optimizer_fix(lambda model: torch.optim.AdamW(model.parameters(), lr=1e-2))
    assert "frozen tensors, which AdamW skips" in last_line(capsys)


def test_the_pre_fix_state_is_what_the_library_gave_without_adopting_modes(adapter, monkeypatch):
    fixed = failures.resumed_model(adapter)
    assert symptoms.modules_in_training_mode(fixed) == []
    emulated = set(symptoms.modules_in_training_mode(failures.as_before_the_fix(failures.resumed_model(adapter))))
    monkeypatch.setattr(tuner, "adopt_training_modes", lambda *args: None)     # the library before the fix
    unfixed = failures.resumed_model(adapter)
    unfixed.training = unfixed.base_model.training = True                     # nn.Module's default, before the fix
    assert emulated == set(symptoms.modules_in_training_mode(unfixed))
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_dropout.default" in emulated
    assert not any(m.training for m in unfixed.get_base_model().model.layers[0].self_attn.q_proj.base_layer.modules())
    assert len(set(symptoms.repeated_losses(unfixed, failures.sentiment_batch(8)))) > 1, "its dropout at work"


def test_the_notebook_lists_every_choice_its_checkers_accept():
    text = "".join("".join(cell["source"]) for cell in json.loads(NOTEBOOK.read_text())["cells"])
    missing = [choice for _, choices, _ in CHOICES for choice in choices if choice not in text]
    assert not missing, f"the notebook does not show these choices: {missing}"
