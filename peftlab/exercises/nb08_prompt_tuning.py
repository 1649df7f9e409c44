"""Checkers for 08_prompt_tuning."""
import torch

from ..batching import IGNORE_INDEX
from .checking import Verdict, attempted, call_stub, report


def check_prompt_parameter_count(answer) -> Verdict:
    """🌱 Trained numbers of a 100-token soft prompt on T5-XXL (d = 4096, 24 blocks per stack, 11B parameters)."""
    if not attempted(answer):
        return report("soft prompt parameter count", None)
    P, d, layers = 100, 4096, 24
    if answer == P * d:
        return report("soft prompt parameter count", True,
                      f"{P * d:,}: about {P * d / 11e9:.4%} of the 11 billion parameters, and the same for every layer count.")
    if answer in (P * d * layers, P * d * layers * 2, P * d * layers * 4):
        return report("soft prompt parameter count", False,
                      "that counts a vector per layer (or keys and values per layer): that is prefix tuning. "
                      "A soft prompt enters once, at the input embeddings.")
    if answer == P:
        return report("soft prompt parameter count", False, "each virtual token is a whole vector of width d, not one number.")
    return report("soft prompt parameter count", False, "a soft prompt is a P x d table: one input embedding per virtual token.")


def check_extend_labels(fn) -> Verdict:
    """🌿 Labels for [prompt; input]: P ignored positions (-100) in front of the original labels."""
    labels = torch.tensor([[IGNORE_INDEX, 5, 7, 2], [IGNORE_INDEX, 9, 2, IGNORE_INDEX]])
    result = call_stub(fn, labels.clone(), 3)
    if not attempted(result):
        return report("extend the labels", None)
    result = torch.as_tensor(result)
    expected = torch.cat([torch.full((2, 3), IGNORE_INDEX), labels], dim=1)
    if tuple(result.shape) != (2, 7):
        return report("extend the labels", False, f"shape {tuple(result.shape)}, expected (B, P + n) = (2, 7).")
    if torch.equal(result[:, :4], labels):
        return report("extend the labels", False, "the virtual tokens come *first*: their labels go in front.")
    if torch.equal(result[:, 3:], labels) and (result[:, :3] == 0).all():
        return report("extend the labels", False,
                      "0 is a real token id (the loss would train the prompt to predict it); use -100, which "
                      "cross_entropy ignores.")
    if not torch.equal(result.long(), expected):
        return report("extend the labels", False, "row b should read [-100] * P followed by the original labels of row b.")
    return report("extend the labels", True, "the virtual positions never enter the loss: it has the same targets as without a prompt.")


def check_mixed_task_batch(fn) -> Verdict:
    """🌳 One frozen model, many tasks in one batch: row b gets the prompt of task task_ids[b]."""
    g = torch.Generator().manual_seed(0)
    prompts, embeds = torch.randn(3, 2, 4, generator=g), torch.randn(3, 5, 4, generator=g)
    task_ids = torch.tensor([2, 0, 2])
    result = call_stub(fn, prompts, task_ids, embeds)
    if not attempted(result):
        return report("mixed-task batch", None)
    result = torch.as_tensor(result)
    if tuple(result.shape) != (3, 7, 4):
        return report("mixed-task batch", False, f"shape {tuple(result.shape)}, expected (B, P + n, d) = (3, 7, 4).")
    if torch.equal(result[:, :2], prompts) or torch.equal(result[:, :2], prompts[0].expand(3, -1, -1)):
        return report("mixed-task batch", False,
                      "row b needs the prompt of *its* task, prompts[task_ids[b]]: index the prompts with task_ids.")
    if torch.equal(result[:, -2:], prompts[task_ids]):
        return report("mixed-task batch", False, "the prompt goes in front of the input, not after it.")
    if not torch.equal(result, torch.cat([prompts[task_ids], embeds], dim=1)):
        return report("mixed-task batch", False, "row b should read [prompts[task_ids[b]]; embeds[b]].")
    return report("mixed-task batch", True,
                  "one copy of the model serves every task at once; only a P x d table per task differs.")
