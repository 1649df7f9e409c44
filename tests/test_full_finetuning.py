"""The issue's bar: full fine-tuning of the base model reaches >= 90% sentiment accuracy in < 60 s."""
import torch

from peftlab.workbook import PromptTargetCollator, evaluate, load_base_model, load_task, train
from peftlab.workbook.data import LABEL_WORDS


def test_full_finetuning_learns_sentiment_within_a_minute():
    torch.set_num_threads(2)   # the bar is for 2 CPU cores
    model, tokenizer = load_base_model()
    task = load_task("sentiment")
    history = train(model, task["train"], PromptTargetCollator(tokenizer), steps=150, lr=1e-3,
                    batch_size=32, warmup=0.1, seed=0, device="cpu", progress=False)
    accuracy = evaluate.label_accuracy(model, tokenizer, task["test"], LABEL_WORDS)
    assert accuracy >= 0.90
    assert history.seconds - history.eval_seconds < 60
