"""Library support and exercise checkers for notebook 08 (prompt tuning)."""
import copy

import torch

from peftlab import PromptTuningConfig, get_peft_model, load_base_model
from peftlab.batching import IGNORE_INDEX
from peftlab.data import LABEL_WORDS, load_task
from peftlab.evaluate import label_accuracy
from peftlab.exercises import NOT_ATTEMPTED
from peftlab.exercises import nb08_prompt_tuning as nb08


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


def test_extend_labels_checker(capsys):
    assert not nb08.check_extend_labels(stub)
    assert NOT_ATTEMPTED in capsys.readouterr().out

    def right(labels, P):
        return torch.cat([labels.new_full((labels.shape[0], P), IGNORE_INDEX), labels], dim=1)

    def zeros_in_front(labels, P):
        return torch.cat([labels.new_zeros(labels.shape[0], P), labels], dim=1)

    def at_the_end(labels, P):
        return torch.cat([labels, labels.new_full((labels.shape[0], P), IGNORE_INDEX)], dim=1)

    assert nb08.check_extend_labels(right)
    assert not nb08.check_extend_labels(zeros_in_front)
    assert "-100" in capsys.readouterr().out.splitlines()[-1]
    assert not nb08.check_extend_labels(at_the_end)
    assert "first" in capsys.readouterr().out.splitlines()[-1]


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
