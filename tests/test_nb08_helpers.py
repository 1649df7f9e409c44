"""Library support and exercise checkers for notebook 08 (prompt tuning)."""
import copy

import torch

from peftlab import PromptTuningConfig, get_peft_model
from peftlab.course.exercises import NOT_ATTEMPTED
from peftlab.course.exercises import nb08_prompt_tuning as nb08
from peftlab.workbook import load_base_model
from peftlab.workbook.data import LABEL_WORDS, load_task
from peftlab.workbook.evaluate import label_accuracy


def stub(*_):
    raise NotImplementedError


def test_label_accuracy_reads_the_last_real_token_of_a_soft_prompted_model():
    model, tokenizer = load_base_model()
    torch.manual_seed(0)
    peft_model = get_peft_model(copy.deepcopy(model), PromptTuningConfig(num_virtual_tokens=6)).eval()
    rows = [dict(load_task("sentiment")["test"][i]) for i in range(24)]   # different lengths: padding
    words = torch.tensor([tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in LABEL_WORDS])
    right, shifted = [], []
    with torch.no_grad():
        for row in rows:   # one at a time, no padding: the last logit is the prediction
            ids = tokenizer(row["prompt"], return_tensors="pt")["input_ids"]
            logits = peft_model(input_ids=ids).logits[0, :, words]          # (P + n, 2)
            right.append(int(logits[-1].argmax()))
            shifted.append(int(logits[ids.shape[1] - 1].argmax()))        # forgetting the P virtual positions
    assert right != shifted, "the test needs rows where reading the wrong position changes the answer"
    for row, prediction in zip(rows, right):
        row["label"] = prediction                  # label each row with the model's own answer
    assert label_accuracy(peft_model, tokenizer, rows, LABEL_WORDS) == 1.0


def test_parameter_count_checker(capsys):
    assert not nb08.check_prompt_parameter_count(None)
    assert NOT_ATTEMPTED in capsys.readouterr().out
    assert nb08.check_prompt_parameter_count(100 * 4096)
    assert not nb08.check_prompt_parameter_count(100 * 4096 * 24)
    assert "prefix tuning" in capsys.readouterr().out.splitlines()[-1]


def test_mixed_task_batch_checker(capsys):
    assert not nb08.check_mixed_task_batch(stub)
    assert NOT_ATTEMPTED in capsys.readouterr().out

    def right(prompts, task_ids, embeds):
        return torch.cat([prompts[task_ids], embeds], dim=1)

    def by_row(prompts, task_ids, embeds):
        return torch.cat([prompts, embeds], dim=1)

    def after(prompts, task_ids, embeds):
        return torch.cat([embeds, prompts[task_ids]], dim=1)

    assert nb08.check_mixed_task_batch(right)
    assert not nb08.check_mixed_task_batch(by_row)
    assert "task_ids" in capsys.readouterr().out.splitlines()[-1]
    assert not nb08.check_mixed_task_batch(after)
    assert "in front" in capsys.readouterr().out.splitlines()[-1]


def last_line(capsys) -> str:
    return capsys.readouterr().out.splitlines()[-1]


def test_learning_rate_checker_judges_the_prediction_by_the_measurement(capsys):
    assert not nb08.check_prompt_learning_rate(None, 0.515)
    assert NOT_ATTEMPTED in capsys.readouterr().out
    assert nb08.check_prompt_learning_rate("chance", 206 / 400)
    assert not nb08.check_prompt_learning_rate("as good", 206 / 400)
    assert "'chance', not 'as good'" in last_line(capsys)
    reference = nb08.stored_rows()["init"]["random"]["test"][0]
    assert nb08.check_prompt_learning_rate("as good", reference)
    assert nb08.check_prompt_learning_rate("between", 0.7)
    assert not nb08.check_prompt_learning_rate("maybe", 0.7)
    assert "predict one of" in last_line(capsys)
    assert not nb08.check_prompt_learning_rate("chance", 0.5123)
    assert "400" in last_line(capsys)


def test_more_steps_checker(capsys):
    assert not nb08.check_more_steps(None, None)
    assert NOT_ATTEMPTED in capsys.readouterr().out
    truth = nb08.more_steps_accuracy()
    reference = nb08.stored_rows()["length"]["P=32"]["test"][0]
    caught_up = truth >= reference - 0.05
    assert nb08.check_more_steps(caught_up, truth) and not nb08.check_more_steps(not caught_up, truth)
    assert "One seed, and one rate for both budgets" in last_line(capsys)
    assert not nb08.check_more_steps(caught_up, 233 / 400 if truth != 233 / 400 else 234 / 400)
    assert "measured again here" in last_line(capsys)
    assert not nb08.check_more_steps("no", truth)
    assert "True" in last_line(capsys)


def test_hard_prompt_checker(capsys):
    model, tokenizer = load_base_model()
    torch.manual_seed(0)
    soft = get_peft_model(copy.deepcopy(model), PromptTuningConfig(num_virtual_tokens=6))
    rows = [load_task("sentiment")["test"][i] for i in range(40)]
    table = soft.get_input_embeddings().weight.detach()
    # Start the prompt on words that the dot product does not find (a longer word vector wins): there cosine
    # and dot product disagree, so the checker must tell them apart.
    misfound = torch.nonzero((table @ table.T).argmax(-1) != torch.arange(len(table))).flatten()
    with torch.no_grad():
        soft.prompt_encoder["default"].embedding.weight.copy_(table[misfound[:6]])

    def snapped(peft_model, pick):
        hard = copy.deepcopy(peft_model)
        prompt = hard.prompt_encoder["default"].embedding.weight
        with torch.no_grad():
            prompt.copy_(table[pick(prompt)])
        return hard

    def right(peft_model):
        return snapped(peft_model, lambda p: nb08.nearest_rows(p, table))

    def by_dot_product(peft_model):
        return snapped(peft_model, lambda p: (p @ table.T).argmax(-1))

    def in_place(peft_model):
        with torch.no_grad():
            peft_model.prompt_encoder["default"].embedding.weight.mul_(2)
        return peft_model

    prompt = soft.prompt_encoder["default"].embedding.weight.detach()
    assert not torch.equal(nb08.nearest_rows(prompt, table), (prompt @ table.T).argmax(-1)), "a case where they differ"
    assert not nb08.check_hard_prompt(right, None, soft, tokenizer, rows)
    assert NOT_ATTEMPTED in capsys.readouterr().out
    assert not nb08.check_hard_prompt(stub, "chance", soft, tokenizer, rows)
    assert NOT_ATTEMPTED in capsys.readouterr().out
    found = nb08.outcome(label_accuracy(right(soft), tokenizer, rows, LABEL_WORDS),
                         label_accuracy(soft, tokenizer, rows, LABEL_WORDS))
    assert nb08.check_hard_prompt(right, found, soft, tokenizer, rows)
    assert not nb08.check_hard_prompt(right, next(c for c in ("as good", "between", "chance") if c != found),
                                      soft, tokenizer, rows)
    assert not nb08.check_hard_prompt(by_dot_product, found, soft, tokenizer, rows)
    assert "dot product" in last_line(capsys)
    assert not nb08.check_hard_prompt(in_place, found, soft, tokenizer, rows)
    assert "copy" in last_line(capsys)
