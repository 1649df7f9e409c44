"""The bundled base model: loads offline like a hub model and meets the quality bars of the card."""
import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from peftlab import evaluate, load_base_model
from peftlab.data import LABEL_WORDS, load_corpus, load_task
from peftlab.zoo import model_path


@pytest.fixture(scope="module")
def base():
    return load_base_model()


def test_loads_with_auto_classes_from_its_folder():
    path = model_path()
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert isinstance(model, LlamaForCausalLM)
    assert (path / "model.safetensors").exists() and not list(path.glob("*.bin"))
    assert tokenizer.decode(tokenizer("The capital of Peru is Lima .")["input_ids"],
                            skip_special_tokens=True) == "The capital of Peru is Lima ."


def test_unknown_model_name_lists_the_bundled_ones():
    with pytest.raises(FileNotFoundError, match="pico-llama-1m"):
        model_path("gpt2")


def test_fact_recall_is_at_least_80_percent(base):
    assert evaluate.fact_recall(*base) >= 0.80


def test_sentiment_zero_shot_is_near_chance(base):
    acc = evaluate.label_accuracy(*base, load_task("sentiment")["test"], LABEL_WORDS)
    assert acc <= 0.50 + 0.15


def test_capitals_probe_is_clearly_below_fact_recall(base):
    probe = [r for split in load_task("capitals").values() for r in split]
    assert evaluate.exact_match(*base, probe) <= evaluate.fact_recall(*base) - 0.3


def test_model_card_reports_what_the_model_does(base):
    facts = json.loads((model_path() / "training.json").read_text())
    card = (model_path() / "README.md").read_text()
    assert f"{facts['parameters']:,}" in card and str(facts["heldout_perplexity"]) in card
    assert facts["parameters"] == sum(p.numel() for p in base[0].parameters())
    assert evaluate.fact_recall(*base) == pytest.approx(facts["fact_recall"], abs=1e-3)
    heldout = list(load_corpus()["heldout"]["text"])
    assert evaluate.perplexity(*base, heldout) == pytest.approx(facts["heldout_perplexity"], rel=1e-3)
