"""Fact recall by ranking: the log-probability of a whole target, and a ranking that measures what
the model knows even when greedy decoding would stop at once."""
import pytest
import torch
from torch import nn

from peftlab.workbook import evaluate, load_base_model
from peftlab.workbook.data.world import COUNTRIES


@pytest.fixture(scope="module")
def base():
    model, tokenizer = load_base_model()
    return model.eval(), tokenizer


def test_target_log_probs_sum_the_log_probabilities_of_every_target_token(base):
    model, tokenizer = base
    rows = [{"prompt": "The capital of France is", "target": " Paris"},
            {"prompt": "The capital of Argentina is", "target": " Buenos Aires"}]
    got = evaluate.target_log_probs(model, tokenizer, rows)
    for row, value in zip(rows, got):
        prompt = tokenizer(row["prompt"])["input_ids"]             # with <bos>, as the collator adds it
        target = tokenizer(row["target"], add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt + target])
        with torch.no_grad():
            log_probs = model(input_ids=ids).logits[0].log_softmax(-1)
        expected = sum(log_probs[len(prompt) - 1 + i, t].item() for i, t in enumerate(target))
        assert value == pytest.approx(expected, abs=1e-4)
    assert len(tokenizer(" Buenos Aires", add_special_tokens=False)["input_ids"]) == 2


class EndsAtOnce(nn.Module):
    """The base model with <eos> made the most likely next token everywhere."""

    def __init__(self, model, eos_id: int):
        super().__init__()
        self.model, self.eos_id = model, eos_id

    def forward(self, **kwargs):
        out = self.model(**kwargs)
        out.logits[..., self.eos_id] += 50.0
        return out


def test_ranking_measures_knowledge_where_greedy_recall_sees_only_an_early_stop(base):
    model, tokenizer = base
    countries = COUNTRIES[:30]
    by_rank = evaluate.fact_recall_by_rank(model, tokenizer, countries=countries)
    assert by_rank >= evaluate.fact_recall(model, tokenizer, countries=countries) - 0.05 and by_rank >= 0.8
    stopping = EndsAtOnce(model, tokenizer.eos_token_id)
    assert evaluate.fact_recall(stopping, tokenizer, countries=countries) == 0.0
    # The same constant is added to every candidate's normaliser: the ranking among capitals is unchanged.
    assert evaluate.fact_recall_by_rank(stopping, tokenizer, countries=countries) == by_rank


def test_the_fast_ranking_equals_scoring_every_capital_after_every_prompt(base):
    model, tokenizer = base
    countries = COUNTRIES[30:70]                    # four two-token capitals among them (New Delhi, ...)
    capitals = [f" {capital}" for _, capital, _ in countries]
    hits = 0
    for country, capital, _ in countries:
        rows = [{"prompt": evaluate.FACT_TEMPLATE.format(c=country), "target": c} for c in capitals]
        scores = evaluate.target_log_probs(model, tokenizer, rows)
        hits += max(range(len(capitals)), key=scores.__getitem__) == capitals.index(f" {capital}")
    assert evaluate.fact_recall_by_rank(model, tokenizer, countries=countries) == hits / len(countries)
