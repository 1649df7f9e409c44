"""Merging task vectors: task arithmetic, magnitude pruning, TIES and DARE, as pure tensor maths.

A *task vector* is what fine-tuning changed, τ = θ_tuned - θ_base (for an adapter: its ΔW, or
its factors A and B). Merging builds one tensor from several task vectors τ_1..τ_n with weights
w_1..w_n. Every function here takes `task_tensors`, a list of same-shape tensors, and `weights`,
one number per tensor (a list or a 1-D tensor), and returns one tensor of that shape. The names
and arguments are those of `peft.utils.merge_utils`, so the two can be swapped in a notebook.

- task arithmetic (Ilharco et al. 2023, arXiv:2212.04089): Σ w_i τ_i. Adding task vectors adds
  skills; a negative weight subtracts one ("forgetting by negation").
- magnitude pruning: keep only the `density` fraction of largest |entries| of each τ_i first;
  most of a fine-tuning update is small and redundant.
- TIES-Merging (Yadav et al. 2023, arXiv:2306.01708): Trim (magnitude pruning), Elect a sign per
  entry (the sign with the larger total mass, or held by more tensors), and Disjoint-merge:
  average only the entries that agree with the elected sign, so that opposite updates from two
  tasks do not cancel each other into noise.
- DARE (Yu et al. 2023, arXiv:2311.03099): Drop each entry with probability 1 - density And
  REscale the survivors by 1 / density, so every entry keeps its expected value. Then either a
  weighted sum (dare_linear) or TIES' sign election and disjoint merge (dare_ties).

DARE is random: seed torch (torch.manual_seed) for repeatable masks.
"""
from collections.abc import Sequence

import torch

SIGN_METHODS = ("total", "frequency")


def _stack(task_tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.stack(list(task_tensors), dim=0)                           # (n, *shape)


def _weighted(stacked: torch.Tensor, weights) -> torch.Tensor:
    """w_i τ_i for every i: the weights are broadcast over each tensor's own axes."""
    weights = torch.as_tensor(weights, dtype=stacked.dtype, device=stacked.device)
    return stacked * weights.view(-1, *([1] * (stacked.dim() - 1)))         # (n, *shape)


def magnitude_based_pruning(tensor: torch.Tensor, density: float) -> torch.Tensor:
    """Zero all but the int(density * numel) entries of largest magnitude (TIES' "trim")."""
    keep = int(density * tensor.numel())
    mask = torch.zeros(tensor.numel(), dtype=tensor.dtype, device=tensor.device)
    mask[tensor.abs().flatten().topk(keep).indices] = 1
    return tensor * mask.view(tensor.shape)


def random_pruning(tensor: torch.Tensor, density: float, rescale: bool) -> torch.Tensor:
    """Keep each entry with probability `density` (DARE's drop); `rescale` divides the kept
    entries by density, so that the expected value of every entry is unchanged."""
    kept = tensor * torch.bernoulli(torch.full_like(tensor, density))
    return kept / density if rescale else kept


def prune(tensor: torch.Tensor, density: float, method: str, rescale: bool = False) -> torch.Tensor:
    """Keep a `density` fraction of `tensor`: by magnitude ("magnitude") or at random ("random").
    density 1 keeps everything (and then no random numbers are drawn)."""
    if not 0 < density <= 1:
        raise ValueError(f"density is the fraction of entries kept, in (0, 1]; got {density!r}.")
    if density == 1:
        return tensor
    if method == "magnitude":
        return magnitude_based_pruning(tensor, density)
    if method == "random":
        return random_pruning(tensor, density, rescale)
    raise ValueError(f"Unknown pruning method {method!r}; use 'magnitude' or 'random'.")


def calculate_majority_sign_mask(tensor: torch.Tensor, method: str = "total") -> torch.Tensor:
    """TIES' sign election over the stacked task tensors (n, *shape): True where an entry has the
    elected sign. "total": the sign of Σ_i τ_i (mass decides); "frequency": the sign most tensors
    hold (votes decide). A tie elects +."""
    if method not in SIGN_METHODS:
        raise ValueError(f"majority_sign_method must be one of {SIGN_METHODS}, got {method!r}.")
    sign = tensor.sign()
    votes = tensor.sum(dim=0) if method == "total" else sign.sum(dim=0)     # (*shape)
    elected = torch.where(votes >= 0, 1.0, -1.0).to(sign.dtype)
    return sign == elected                                                  # (n, *shape)


def disjoint_merge(task_tensors: torch.Tensor, majority_sign_mask: torch.Tensor) -> torch.Tensor:
    """The mean, per entry, of only the tensors that agree with the elected sign (TIES' merge).
    An entry where none agrees (all zero after trimming) stays 0."""
    agreeing = (task_tensors * majority_sign_mask).sum(dim=0)
    count = majority_sign_mask.sum(dim=0).clamp(min=1)
    return agreeing / count


def task_arithmetic(task_tensors: Sequence[torch.Tensor], weights) -> torch.Tensor:
    """Σ w_i τ_i (Ilharco et al. 2023)."""
    return _weighted(_stack(task_tensors), weights).sum(dim=0)


def magnitude_prune(task_tensors: Sequence[torch.Tensor], weights, density: float) -> torch.Tensor:
    """Σ w_i trim(τ_i): task arithmetic on the largest `density` fraction of each tensor."""
    trimmed = [prune(t, density, "magnitude") for t in task_tensors]
    return task_arithmetic(trimmed, weights)


def _elect_and_merge(pruned: Sequence[torch.Tensor], weights, majority_sign_method: str) -> torch.Tensor:
    stacked = _stack(pruned)
    # The sign is elected on the unweighted tensors; the weights enter the mean (as in peft).
    mask = calculate_majority_sign_mask(stacked, majority_sign_method)
    return disjoint_merge(_weighted(stacked, weights), mask)


def ties(task_tensors: Sequence[torch.Tensor], weights, density: float,
         majority_sign_method: str = "total") -> torch.Tensor:
    """TIES-Merging (Yadav et al. 2023): trim to `density`, elect signs, disjoint mean."""
    trimmed = [prune(t, density, "magnitude") for t in task_tensors]
    return _elect_and_merge(trimmed, weights, majority_sign_method)


def dare_linear(task_tensors: Sequence[torch.Tensor], weights, density: float) -> torch.Tensor:
    """DARE (Yu et al. 2023) then task arithmetic: Σ w_i drop_rescale(τ_i)."""
    dropped = [prune(t, density, "random", rescale=True) for t in task_tensors]
    return task_arithmetic(dropped, weights)


def dare_ties(task_tensors: Sequence[torch.Tensor], weights, density: float,
              majority_sign_method: str = "total") -> torch.Tensor:
    """DARE's random drop and rescale in place of TIES' trim, then TIES' election and merge."""
    dropped = [prune(t, density, "random", rescale=True) for t in task_tensors]
    return _elect_and_merge(dropped, weights, majority_sign_method)


# combination name (without "_svd") -> (function, does it take density, does it elect signs)
MERGERS = {
    "linear": (task_arithmetic, False, False),
    "magnitude_prune": (magnitude_prune, True, False),
    "ties": (ties, True, True),
    "dare_linear": (dare_linear, True, False),
    "dare_ties": (dare_ties, True, True),
}


def merge(kind: str, task_tensors: Sequence[torch.Tensor], weights, density: float | None = None,
          majority_sign_method: str = "total") -> torch.Tensor:
    """One of the merges above by name ("linear", "ties", "dare_linear", "dare_ties", "magnitude_prune")."""
    fn, needs_density, elects = MERGERS[kind]
    args = (density,) if needs_density else ()
    kwargs = {"majority_sign_method": majority_sign_method} if elects else {}
    return fn(task_tensors, weights, *args, **kwargs)
