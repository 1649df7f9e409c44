"""Turning (prompt, target) rows into tensors a causal LM trains on.

The loss is computed on the target tokens (and the closing <eos>) only: the model learns to
*answer*, not to reproduce the prompt. Prompt and padding positions get label -100, which
`transformers` losses ignore.
"""
import torch

from peftlab.tuners.soft_prompts import IGNORE_INDEX  # -100, the label the library's soft prompts use too


class PromptTargetCollator:
    """Callable collate_fn: list of {"prompt", "target"} rows -> padded batch with labels."""

    def __init__(self, tokenizer, add_eos: bool = True):
        self.tokenizer, self.add_eos = tokenizer, add_eos

    def encode(self, row: dict) -> tuple[list[int], list[int]]:
        prompt = self.tokenizer(row["prompt"])["input_ids"]                      # starts with <bos>
        target = self.tokenizer(row["target"], add_special_tokens=False)["input_ids"]
        if self.add_eos:
            target = target + [self.tokenizer.eos_token_id]
        return prompt + target, [IGNORE_INDEX] * len(prompt) + target

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        pairs = [self.encode(r) for r in rows]
        width = max(len(ids) for ids, _ in pairs)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (ids, labs) in enumerate(pairs):   # right padding: position ids stay 0, 1, 2, ...
            input_ids[i, :len(ids)] = torch.tensor(ids)
            labels[i, :len(labs)] = torch.tensor(labs)
            mask[i, :len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
