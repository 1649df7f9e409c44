"""Checkers of notebooks 00 and 02: 'not attempted' for the stubs, True when a prediction matches the
learner's own measurement, and an explanation (never an exception) when it does not."""
import pytest
import torch

from peftlab.course.exercises import nb00_welcome as nb00
from peftlab.course.exercises import nb02_lora_from_scratch as nb02
from peftlab.workbook import evaluate, load_base_model

PROMPT = "Mia bought three red apples at the market. She was happy, and she went home."


@pytest.fixture(scope="module")
def model_and_tokenizer():
    return load_base_model()


def last_line(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


def stub(*_):
    raise NotImplementedError


# --------------------------------------------------------------------------- 00


def test_token_count_explains_bos_punctuation_and_unknown_words(model_and_tokenizer, capsys):
    _, tokenizer = model_and_tokenizer
    truth = len(tokenizer(PROMPT)["input_ids"])
    assert truth == 16, "15 space-separated pieces and <bos>"
    assert not nb00.check_token_count(None, None, PROMPT, tokenizer)
    assert not nb00.check_token_count(16, None, PROMPT, tokenizer)
    assert "not attempted" in capsys.readouterr().out
    assert nb00.check_token_count(16, truth, PROMPT, tokenizer)
    out = last_line(capsys)
    assert "'market.'" in out and "'she'" in out and "<unk>" in out
    assert not nb00.check_token_count(15, truth, PROMPT, tokenizer)
    assert "<bos>" in last_line(capsys)
    assert not nb00.check_token_count(19, truth, PROMPT, tokenizer)
    assert "split the punctuation" in last_line(capsys)
    assert not nb00.check_token_count(16, 15, PROMPT, tokenizer)
    assert "measure with" in last_line(capsys)
    assert not nb00.check_token_count(40, truth, PROMPT, tokenizer)


def test_pretraining_phrasings_are_the_starts_of_corpus_sentences():
    assert nb00.pretraining_phrasing("The capital of {c} is")
    assert nb00.pretraining_phrasing("The government of {c} meets in")
    assert not nb00.pretraining_phrasing("The capital of {c} is the city of")
    assert not nb00.pretraining_phrasing("In {c} , the capital is")


def test_the_base_model_knows_capitals_only_after_corpus_phrasings(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    assert evaluate.fact_recall(model, tokenizer, "The government of {c} meets in") >= 0.5
    assert evaluate.fact_recall(model, tokenizer, "In {c} , the capital is") < 0.5


def test_phrasings_judged_against_the_measured_recall(capsys):
    measured = {"The capital of {c} is": 1.0, "In {c} , the capital is": 0.0, "The main city of {c} is": 0.05}
    right = {"The capital of {c} is": True, "In {c} , the capital is": False, "The main city of {c} is": False}
    assert not nb00.check_phrasings({t: None for t in right}, None)
    assert not nb00.check_phrasings(right, None)
    assert "not attempted" in capsys.readouterr().out
    assert nb00.check_phrasings(right, measured)
    assert "1 of yours" in last_line(capsys)
    assert not nb00.check_phrasings({**right, "In {c} , the capital is": True}, measured)
    assert "off for ['In {c} , the capital is']" in last_line(capsys)
    assert not nb00.check_phrasings(right, {"The capital of {c} is": 1.0})
    assert "measure every phrasing" in last_line(capsys)
    assert not nb00.check_phrasings({t: "yes" for t in right}, measured)
    assert "True" in last_line(capsys)
    assert not nb00.check_phrasings(right, {**measured, "The capital of {c} is": 106})
    assert "between 0 and 1" in last_line(capsys)


def test_with_examples_puts_labelled_examples_in_front():
    rows = [{"prompt": "Review : good . Sentiment :", "label": 1}]
    examples = [{"prompt": "Review : bad . Sentiment :", "target": " negative"},
                {"prompt": "Review : fine . Sentiment :", "target": " positive"}]
    shot = nb00.with_examples(rows, examples)
    assert shot[0]["prompt"] == ("Review : bad . Sentiment : negative . Review : fine . Sentiment : positive . "
                                 "Review : good . Sentiment :")
    assert shot[0]["label"] == 1
    assert nb00.with_examples(rows, []) == rows


def test_examples_in_the_prompt_judged_against_the_measured_accuracies(capsys):
    measured = {0: 0.51, 2: 0.53, 4: 0.52, 8: 0.80}
    assert nb00.smallest_count(measured) == 8
    assert not nb00.check_examples_in_the_prompt(None, None)
    assert not nb00.check_examples_in_the_prompt(8, None)
    assert "not attempted" in capsys.readouterr().out
    assert nb00.check_examples_in_the_prompt(8, measured)
    assert "in-context learning" in last_line(capsys)
    assert not nb00.check_examples_in_the_prompt(4, measured)
    assert "is 8, not 4" in last_line(capsys)
    assert not nb00.check_examples_in_the_prompt(3, measured)
    assert "predict one of" in last_line(capsys)
    assert not nb00.check_examples_in_the_prompt(8, {0: 0.5, 8: 0.8})
    assert "for each number" in last_line(capsys)
    flat = {k: 0.5 for k in nb00.FEW_SHOT_COUNTS}
    assert nb00.check_examples_in_the_prompt("none", flat)
    assert "cannot pick the task up" in last_line(capsys)
    assert not nb00.check_examples_in_the_prompt(8, flat)


# --------------------------------------------------------------------------- 02


def test_lora_parameter_count(capsys):
    assert not nb02.check_lora_parameter_count(None)
    assert "not attempted" in capsys.readouterr().out
    assert nb02.check_lora_parameter_count(65_536)
    assert not nb02.check_lora_parameter_count(8 * 4096)
    assert "A alone" in last_line(capsys)


def test_lora_forward_must_not_form_ba(capsys):
    assert not nb02.check_lora_forward(stub)
    assert "not attempted" in capsys.readouterr().out
    good = lambda x, W0, b, A, B, s: x @ W0.T + b + s * ((x @ A.T) @ B.T)
    wasteful = lambda x, W0, b, A, B, s: x @ (W0 + s * B @ A).T + b
    unscaled = lambda x, W0, b, A, B, s: x @ W0.T + b + (x @ A.T) @ B.T
    assert nb02.check_lora_forward(good)
    assert not nb02.check_lora_forward(wasteful)
    assert "formed B @ A" in last_line(capsys)
    assert not nb02.check_lora_forward(unscaled)
    assert "wrong values" in last_line(capsys)


def rank4_target(d: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    left, _ = torch.linalg.qr(torch.randn(d, 4, generator=g))
    right, _ = torch.linalg.qr(torch.randn(d, 4, generator=g))
    return left @ torch.diag(torch.tensor([1.0, 0.5, 0.2, 0.005])) @ right.T


def test_best_errors_are_the_singular_values_left_out():
    best = nb02.best_errors(rank4_target())
    assert list(best) == [1, 2, 3, 4]
    norm = (1 + 0.25 + 0.04 + 0.005**2) ** 0.5
    assert best[2] == pytest.approx((0.2**2 + 0.005**2) ** 0.5 / norm, rel=1e-4)
    assert best[3] == pytest.approx(0.005 / norm, rel=1e-3)
    assert best[4] < 1e-5


def test_smallest_rank_judged_against_the_trained_errors(capsys):
    target = rank4_target()
    best = nb02.best_errors(target)
    trained = {r: best[r] + 1e-4 for r in (1, 2, 3)} | {4: 0.0043}
    assert not nb02.check_smallest_rank(None, None, target)
    assert not nb02.check_smallest_rank(3, None, target)
    assert "not attempted" in capsys.readouterr().out
    assert nb02.check_smallest_rank(3, trained, target)
    assert "no rank of its own" in last_line(capsys)
    assert not nb02.check_smallest_rank(4, trained, target)
    assert "is 3, not 4" in last_line(capsys)
    assert not nb02.check_smallest_rank(3, {3: trained[3], 4: trained[4]}, target)
    assert "did not train r = [1, 2]" in last_line(capsys)
    assert not nb02.check_smallest_rank(3, {**trained, 2: 0.001}, target)
    assert "below" in last_line(capsys)
    assert not nb02.check_smallest_rank(1, {1: trained[1]}, target)
    assert "no rank you trained" in last_line(capsys)
    assert not nb02.check_smallest_rank(2.5, trained, target)
    assert "whole number" in last_line(capsys)
    assert not nb02.check_smallest_rank(3, [0.47, 0.17, 0.004], target)
    assert "dict" in last_line(capsys)


def run(targets: str, accuracy: float, recall: float, steps: int = 40) -> dict:
    return {"targets": targets, "steps": steps, "trainable": 7168 if targets == "q,v" else 45056,
            "final_loss": 0.77 if targets == "q,v" else 0.005, "accuracy": accuracy, "recall": recall}


def test_target_modules_judged_against_both_runs(capsys):
    runs = {"q,v": run("q,v", 0.5, 0.632), "all-linear": run("all-linear", 1.0, 0.962)}
    right = {"accuracy": "all-linear", "recall": "all-linear"}
    assert not nb02.check_target_modules({"accuracy": None, "recall": None}, None)
    assert not nb02.check_target_modules(right, None)
    assert "not attempted" in capsys.readouterr().out
    assert nb02.check_target_modules(right, runs)
    assert "did not mean less forgetting" in last_line(capsys)
    assert not nb02.check_target_modules({**right, "recall": "q,v"}, runs)
    assert "off for ['recall']" in last_line(capsys)
    assert not nb02.check_target_modules({**right, "recall": "qv"}, runs)
    assert "each one of" in last_line(capsys)
    assert not nb02.check_target_modules(right, {"q,v": runs["q,v"]})
    assert "run both" in last_line(capsys)
    assert not nb02.check_target_modules(right, {**runs, "q,v": run("q,v", 0.5, 0.632, steps=80)})
    assert "same number of steps" in last_line(capsys)
    kept = {"q,v": run("q,v", 0.5, 0.99), "all-linear": run("all-linear", 1.0, 0.9)}
    assert nb02.check_target_modules({"accuracy": "all-linear", "recall": "q,v"}, kept)
    assert "changed less" in last_line(capsys)


def test_lora_run_is_reproducible_and_refuses_unknown_targets():
    first, again = nb02.lora_run("q,v", steps=1), nb02.lora_run("q,v", steps=1)
    assert first == again, "the same seed gives the same adapter, training and measures"
    assert first["targets"] == "q,v" and first["steps"] == 1 and first["trainable"] == 7_168
    assert 0 <= first["accuracy"] <= 1 and 0 <= first["recall"] <= 1
    with pytest.raises(ValueError, match="q,v"):
        nb02.lora_run("q_proj")


def test_lora_forward_checker_puts_matmul_back_even_when_the_answer_crashes():
    original = torch.Tensor.__matmul__

    def crashes(x, W0, b, A, B, s):
        raise RuntimeError("shape mismatch")
    with pytest.raises(RuntimeError):
        nb02.check_lora_forward(crashes)
    assert torch.Tensor.__matmul__ is original
