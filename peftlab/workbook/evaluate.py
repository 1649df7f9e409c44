"""Measurements used throughout the workbook: perplexity, label accuracy, greedy exact match,
fact recall (greedy, and by ranking the true answer among the alternatives).

Greedy exact match is computed in one teacher-forced forward pass: if the argmax at every
target position equals the target token, greedy decoding would have produced exactly the
target (each step sees the same prefix), so the two are the same test, batched.
"""
import math
from collections.abc import Sequence

import torch

from peftlab.workbook.batching import IGNORE_INDEX, PromptTargetCollator
from peftlab.workbook.data.world import COUNTRIES


def _device(model) -> torch.device:
    return next(model.parameters()).device


def real_token_logits(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """The logits at the positions of `input_ids`: (B, n, vocab).

    A model with a soft prompt (prompt tuning, P-tuning) returns P more positions in front,
    one per virtual token (logits[:, P:] line up with input_ids); a plain model or prefix
    tuning returns exactly n. Either way the last n positions are the real tokens'.
    """
    n = input_ids.shape[1]
    if logits.shape[1] < n:
        raise ValueError(f"logits cover {logits.shape[1]} positions, fewer than the {n} input tokens.")
    return logits[:, logits.shape[1] - n:]


@torch.no_grad()
def perplexity(model, tokenizer, texts: Sequence[str], batch_size: int = 64) -> float:
    """exp(mean next-token cross-entropy) over every token of `texts` (each ending in <eos>)."""
    collate = PromptTargetCollator(tokenizer)
    total_loss, total_tokens = 0.0, 0
    model.eval()
    for i in range(0, len(texts), batch_size):
        # The whole text is the "target": every token after <bos> counts.
        batch = collate([{"prompt": "", "target": t} for t in texts[i:i + batch_size]])
        batch = {k: v.to(_device(model)) for k, v in batch.items()}
        logits = real_token_logits(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                                   batch["input_ids"])
        labels = batch["labels"][:, 1:]
        losses = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels.flatten(),
                                                   ignore_index=IGNORE_INDEX, reduction="sum")
        total_loss += losses.item()
        total_tokens += int((labels != IGNORE_INDEX).sum())
    return math.exp(total_loss / total_tokens)


@torch.no_grad()
def greedy_matches(model, tokenizer, rows: Sequence[dict], batch_size: int = 64,
                   with_eos: bool = False) -> list[bool]:
    """For each {"prompt", "target"} row: does greedy decoding produce exactly the target?

    With `with_eos`, the model must also stop (predict <eos>) right after the target.
    """
    collate, rows = PromptTargetCollator(tokenizer, add_eos=with_eos), list(rows)  # Dataset -> row dicts
    results = []
    model.eval()
    for i in range(0, len(rows), batch_size):
        batch = {k: v.to(_device(model)) for k, v in collate(list(rows[i:i + batch_size])).items()}
        logits = real_token_logits(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                                   batch["input_ids"])
        predicted, labels = logits[:, :-1].argmax(-1), batch["labels"][:, 1:]
        scored = labels != IGNORE_INDEX
        results += ((predicted == labels) | ~scored).all(dim=1).tolist()
    return results


def exact_match(model, tokenizer, rows: Sequence[dict], **kwargs) -> float:
    matches = greedy_matches(model, tokenizer, rows, **kwargs)
    return sum(matches) / len(matches)


FACT_TEMPLATE = "The capital of {c} is"


def fact_recall(model, tokenizer, template: str = FACT_TEMPLATE, countries=COUNTRIES) -> float:
    """Share of countries whose capital the model completes greedily (every word) after `template`."""
    rows = [{"prompt": template.format(c=c), "target": f" {k}"} for c, k, _ in countries]
    return exact_match(model, tokenizer, rows)


@torch.no_grad()
def target_log_probs(model, tokenizer, rows: Sequence[dict], batch_size: int = 256) -> list[float]:
    """For each {"prompt", "target"} row: the log-probability of the whole target after the prompt
    (the sum over its tokens, teacher forced; no <eos> after it)."""
    collate, rows, totals = PromptTargetCollator(tokenizer, add_eos=False), list(rows), []
    model.eval()
    for i in range(0, len(rows), batch_size):
        batch = {k: v.to(_device(model)) for k, v in collate(list(rows[i:i + batch_size])).items()}
        logits = real_token_logits(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                                   batch["input_ids"])
        labels = batch["labels"][:, 1:]
        scored = labels != IGNORE_INDEX
        log_probs = logits[:, :-1].float().log_softmax(-1).gather(-1, labels.clamp_min(0)[..., None])[..., 0]
        totals += (log_probs * scored).sum(1).tolist()
    return totals


@torch.no_grad()
def next_token_log_probs(model, tokenizer, prompts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """log P(next token | prompt) for each prompt: (len(prompts), vocab)."""
    rows = []
    model.eval()
    for i in range(0, len(prompts), batch_size):
        encoded = tokenizer(list(prompts[i:i + batch_size]), return_tensors="pt", padding=True)
        encoded = {k: v.to(_device(model)) for k, v in encoded.items()}
        logits = real_token_logits(model(**encoded).logits, encoded["input_ids"])
        last = encoded["attention_mask"].sum(1) - 1                     # right padding
        rows.append(logits[torch.arange(len(last)), last].float().log_softmax(-1).cpu())
    return torch.cat(rows)


def fact_recall_by_rank(model, tokenizer, template: str = FACT_TEMPLATE, countries=COUNTRIES) -> float:
    """Share of countries whose true capital is the most probable of all the capitals after `template`.

    Greedy recall asks what the model would *write*; a model that ends the sentence at once (emits
    <eos>) fails it while still preferring the right capital to the others. Ranking asks what the
    model *knows*: log P(" Paris" | "The capital of France is") against every other capital's.
    A one-token capital's log-probability is read from the prompt's next-token distribution; only
    the capitals of several tokens need a pass of their own (8 of the 106)."""
    prompts = [template.format(c=country) for country, _, _ in countries]
    capitals = [f" {capital}" for _, capital, _ in countries]
    tokens = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in capitals]
    scores = next_token_log_probs(model, tokenizer, prompts)[:, [ids[0] for ids in tokens]]   # (countries, capitals)
    longer = [j for j, ids in enumerate(tokens) if len(ids) > 1]
    if longer:
        rows = [{"prompt": p, "target": capitals[j]} for p in prompts for j in longer]
        scores[:, longer] = torch.tensor(target_log_probs(model, tokenizer, rows)).view(len(prompts), len(longer))
    return float((scores.argmax(1) == torch.arange(len(countries))).float().mean())


@torch.no_grad()
def label_accuracy(model, tokenizer, rows: Sequence[dict], label_words: Sequence[str],
                   batch_size: int = 64) -> float:
    """Classification by label words: the label whose word gets the highest next-token logit.

    Rows need `prompt` and an integer `label` indexing `label_words`.
    """
    word_ids = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in label_words]
    if any(len(ids) != 1 for ids in word_ids):
        raise ValueError(f"Each label word must be one token; got {dict(zip(label_words, word_ids))}.")
    word_ids = torch.tensor([ids[0] for ids in word_ids], device=_device(model))
    correct, rows = 0, list(rows)
    model.eval()
    for i in range(0, len(rows), batch_size):
        chunk = list(rows[i:i + batch_size])
        encoded = tokenizer([r["prompt"] for r in chunk], return_tensors="pt", padding=True)
        encoded = {k: v.to(_device(model)) for k, v in encoded.items()}
        logits = real_token_logits(model(**encoded).logits, encoded["input_ids"])
        last = encoded["attention_mask"].sum(1) - 1                     # right padding
        scores = logits[torch.arange(len(chunk)), last][:, word_ids]
        labels = torch.tensor([r["label"] for r in chunk], device=scores.device)
        correct += int((scores.argmax(-1) == labels).sum())
    return correct / len(rows)
