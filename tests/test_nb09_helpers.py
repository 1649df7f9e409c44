"""Library support and exercise checkers for notebook 09 (P-tuning)."""
import pytest
import torch

from peftlab import PromptEncoderConfig, PromptTuningConfig, get_peft_model
from peftlab.course.exercises import NOT_ATTEMPTED
from peftlab.course.exercises import nb09_p_tuning as nb09
from peftlab.workbook import load_base_model
from peftlab.workbook.evaluate import exact_match, greedy_matches, perplexity, real_token_logits


@pytest.fixture(scope="module")
def base():
    return load_base_model()


def test_real_token_logits_keeps_the_last_n_positions():
    logits, ids = torch.arange(2 * 7 * 3.0).reshape(2, 7, 3), torch.zeros(2, 4, dtype=torch.long)
    assert torch.equal(real_token_logits(logits, ids), logits[:, 3:])
    assert torch.equal(real_token_logits(logits[:, 3:], ids), logits[:, 3:])   # a plain model: unchanged
    with pytest.raises(ValueError, match="fewer than"):
        real_token_logits(logits[:, :2], ids)


def _greedy_rows(peft_model, tokenizer, prompts, new_tokens=2):
    """Rows whose targets are exactly what the soft-prompted model generates greedily."""
    rows = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        out = peft_model.generate(input_ids=ids, max_new_tokens=new_tokens, do_sample=False)
        rows.append({"prompt": prompt, "target": tokenizer.decode(out[0, ids.shape[1]:])})
    return rows


@pytest.mark.parametrize("config", [PromptTuningConfig(num_virtual_tokens=5),
                                    PromptEncoderConfig(num_virtual_tokens=5)], ids=["prompt_tuning", "p_tuning"])
def test_exact_match_scores_soft_prompt_models_at_the_real_tokens(base, config):
    model, tokenizer = base
    import copy
    torch.manual_seed(0)
    peft_model = get_peft_model(copy.deepcopy(model), config)
    with torch.no_grad():   # a prompt far from init, so it changes the model's answers
        peft_model.prompt_encoder["default"].embedding.weight.mul_(3.0)
    prompts = ["The capital of France is", "question : capital of Peru ? answer :", "Once upon a time"]
    rows = _greedy_rows(peft_model, tokenizer, prompts)
    assert greedy_matches(peft_model, tokenizer, rows) == [True, True, True]
    assert exact_match(peft_model, tokenizer, rows) == 1.0
    wrong = [{"prompt": r["prompt"], "target": " zzz"} for r in rows]
    assert exact_match(peft_model, tokenizer, wrong) == 0.0


def test_perplexity_of_a_soft_prompt_model_matches_its_loss(base):
    model, tokenizer = base
    import copy
    torch.manual_seed(0)
    peft_model = get_peft_model(copy.deepcopy(model), PromptTuningConfig(num_virtual_tokens=4))
    text = "The capital of France is Paris ."
    ids = tokenizer(text, return_tensors="pt")["input_ids"]                     # <bos> text
    ids = torch.cat([ids, torch.tensor([[tokenizer.eos_token_id]])], dim=1)
    with torch.no_grad():
        loss = peft_model(input_ids=ids, labels=ids).loss
    assert perplexity(peft_model, tokenizer, [text]) == pytest.approx(float(loss.exp()), rel=1e-4)


# --- checkers --------------------------------------------------------------------------------
def stub(*_):
    raise NotImplementedError


def test_parameter_count_checker(capsys):
    assert not nb09.check_encoder_parameter_count(None)
    assert NOT_ATTEMPTED in capsys.readouterr().out
    P, d, H = 20, 768, 768
    assert nb09.check_encoder_parameter_count(P * d + d * H + H + H * H + H + H * d + d)
    assert not nb09.check_encoder_parameter_count(P * d + 3 * d * H)
    assert "bias" in capsys.readouterr().out
    assert not nb09.check_encoder_parameter_count(P * d)
