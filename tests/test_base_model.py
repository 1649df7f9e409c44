"""The bundled base models: load offline like hub models and meet the quality bars of their cards."""
import json

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2LMHeadModel, LlamaForCausalLM

from peftlab.workbook import evaluate, load_base_model
from peftlab.workbook.data import LABEL_WORDS, load_corpus, load_task
from peftlab.workbook.zoo import ARCHITECTURES, model_path

MODELS = list(ARCHITECTURES)


@pytest.fixture(scope="module", params=MODELS)
def base(request):
    return (request.param, *load_base_model(request.param))


def test_every_architecture_is_bundled():
    assert MODELS == ["pico-llama-1m", "pico-llama-4m", "pico-gpt2-1m"]
    for name in MODELS:
        assert (model_path(name) / "config.json").exists()


@pytest.mark.parametrize("name", MODELS)
def test_loads_with_auto_classes_from_its_folder(name):
    path = model_path(name)
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    family = ARCHITECTURES[name][0]
    assert isinstance(model, {"llama": LlamaForCausalLM, "gpt2": GPT2LMHeadModel}[family])
    assert (path / "model.safetensors").exists() and not list(path.glob("*.bin"))
    assert tokenizer.decode(tokenizer("The capital of Peru is Lima .")["input_ids"],
                            skip_special_tokens=True) == "The capital of Peru is Lima ."


def test_the_models_share_one_tokenizer():
    # Same corpus, same tokenizer: scale studies compare models, not vocabularies.
    files = [(model_path(name) / "tokenizer.json").read_bytes() for name in MODELS]
    assert all(f == files[0] for f in files)


def test_the_larger_model_is_stored_in_bfloat16_and_loads_exactly_in_float32():
    with safe_open(model_path("pico-llama-4m") / "model.safetensors", framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    model, _ = load_base_model("pico-llama-4m")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    for p in model.parameters():   # every value is a bfloat16 value: nothing was lost on the way
        assert torch.equal(p, p.to(torch.bfloat16).float())


def test_the_larger_model_has_more_parameters_and_lower_perplexity():
    facts = {name: json.loads((model_path(name) / "training.json").read_text()) for name in MODELS}
    small, large = facts["pico-llama-1m"], facts["pico-llama-4m"]
    assert large["parameters"] >= 3 * small["parameters"]
    assert large["tokens_seen"] == small["tokens_seen"]   # the same data budget
    assert large["heldout_perplexity"] < small["heldout_perplexity"]


def test_unknown_model_name_lists_the_bundled_ones():
    with pytest.raises(FileNotFoundError, match="pico-llama-1m"):
        model_path("gpt2")


def test_fact_recall_is_at_least_80_percent(base):
    _, model, tokenizer = base
    assert evaluate.fact_recall(model, tokenizer) >= 0.80


def test_sentiment_zero_shot_is_near_chance(base):
    _, model, tokenizer = base
    acc = evaluate.label_accuracy(model, tokenizer, load_task("sentiment")["test"], LABEL_WORDS)
    assert acc <= 0.50 + 0.15


def test_capitals_probe_is_clearly_below_fact_recall(base):
    _, model, tokenizer = base
    probe = [r for split in load_task("capitals").values() for r in split]
    assert evaluate.exact_match(model, tokenizer, probe) <= evaluate.fact_recall(model, tokenizer) - 0.3


def test_model_card_reports_what_the_model_does(base):
    name, model, tokenizer = base
    facts = json.loads((model_path(name) / "training.json").read_text())
    card = (model_path(name) / "README.md").read_text()
    assert f"{facts['parameters']:,}" in card and str(facts["heldout_perplexity"]) in card
    assert facts["parameters"] == sum(p.numel() for p in model.parameters())
    assert evaluate.fact_recall(model, tokenizer) == pytest.approx(facts["fact_recall"], abs=1e-3)
    heldout = list(load_corpus()["heldout"]["text"])
    assert evaluate.perplexity(model, tokenizer, heldout) == pytest.approx(facts["heldout_perplexity"], rel=1e-3)


def test_the_gpt2_style_model_has_a_bias_in_every_linear_and_norm_layer_and_the_same_budget():
    """BitFit needs bias terms, which Llama-style models lack: pico-gpt2-1m has them everywhere."""
    model, _ = load_base_model("pico-gpt2-1m")
    layers = [m for m in model.modules() if type(m).__name__ in ("Conv1D", "LayerNorm")]
    assert len(layers) == 4 * 6 + 1 and all(m.bias is not None for m in layers)
    llama, _ = load_base_model("pico-llama-1m")
    assert not any(n.endswith(".bias") for n, _ in llama.named_parameters())
    facts = {name: json.loads((model_path(name) / "training.json").read_text()) for name in MODELS}
    assert facts["pico-gpt2-1m"]["tokens_seen"] == facts["pico-llama-1m"]["tokens_seen"]
