"""Notebook 08's experiment (peftlab/course/experiments/nb08_prompts.py): Lester et al.'s class-label start is
what it says and is in place before the first step; the stored results describe the experiment as defined."""
import torch

from peftlab.course.experiments import nb08_prompts, protocol
from peftlab.course.experiments.protocol import load_results, run_method

ONE_ROW = {"test": [{"prompt": "Review : the food was good . Sentiment :", "target": " positive", "label": 1}]}


def test_class_label_start_puts_one_label_word_per_class_first_and_vocabulary_after():
    table = torch.randn(10, 4)
    start = nb08_prompts.class_label_start(table, [7, 3], 5, torch.Generator().manual_seed(0))
    assert start.shape == (5, 4) and torch.equal(start[:2], table[[7, 3]])
    assert all(any(torch.equal(row, word) for word in table) for row in start[2:])
    assert torch.equal(nb08_prompts.class_label_start(table, [7, 3], 1), table[[7]])


def test_the_class_label_start_is_in_place_before_the_first_step_and_runs_are_deterministic():
    seen = []

    def observe(model):   # called on the model about to train, after the method's own hooks are built
        seen.append((model.prompt_encoder["default"].embedding.weight.detach().clone(),
                     model.get_input_embeddings().weight.detach()))
        return lambda step: None

    kw = dict(base_name=nb08_prompts.SMALL, task_name="sentiment", steps=2, batch_size=4, eval_rows=ONE_ROW)
    method = nb08_prompts.INITS["class labels (Lester et al.)"]
    first, second = (run_method(method, 0.1, 0, observe=observe, **kw) for _ in range(2))
    assert first == second and first["trainable"] == 32 * 128
    (start, table), (again, _) = seen
    label_ids = nb08_prompts.tokenizer().convert_tokens_to_ids(["negative", "positive"])
    assert torch.equal(start, again) and torch.equal(start[:2], table[label_ids])
    assert all(any(torch.equal(row, word) for word in table) for row in start[2:])   # sampled vocabulary


def test_the_stored_nb08_results_describe_the_experiment_as_defined():
    stored = load_results("nb08_prompts")
    settings, seeds = stored["settings"], list(nb08_prompts.SETTINGS["seeds"])
    assert settings["steps"] == nb08_prompts.SETTINGS["steps"] and settings["seeds"] == seeds and len(seeds) >= 3
    assert settings["longer_steps"] == nb08_prompts.LONGER_STEPS and settings["n_test"] == 400
    assert list(stored["init"]) == list(stored["init_longer"]) == list(nb08_prompts.INITS)
    for name, row in stored["init"].items():
        assert protocol.grew_from(row, nb08_prompts.INITS[name].lrs) and len(row["test"]) == len(seeds)
        assert stored["init_longer"][name]["validation_by_lr"].keys() == {str(row["lr"])}   # at the 100-step rate
        assert stored["init_longer"][name]["rate_from"] == "init"
    assert list(stored["length"]) == ["P=1", "P=8", "P=32"] and stored["length"]["P=32"] == stored["init"]["random"]
    assert {base: list(rows) for base, rows in stored["scale"].items()} == {
        base: list(methods) for base, methods in nb08_prompts.SCALE.items()}
    small, large = (stored["scale"][base] for base in (nb08_prompts.SMALL, nb08_prompts.LARGE))
    assert small["prompt P=16"]["trainable"] == large["prompt P=8"]["trainable"] == 2048   # parameter-matched
    assert small["prompt P=8"]["trainable"] == large["prompt P=4"]["trainable"] == 1024
    for rows in stored["scale"].values():
        assert all(row["test_min"] <= row["test_mean"] <= row["test_max"] for row in rows.values())
