"""Combining LoRA adapters into a new one: peft's `add_weighted_adapter`, same names and results.

Each LoRA adapter i changes a layer by ΔW_i = s_i B_i A_i. Given weights w_i, the new adapter
should change it by about Σ w_i ΔW_i (task arithmetic; TIES and DARE refine the sum, see
peftlab/merging.py). There are three ways to get LoRA factors for it, `combination_type`:

- "cat": stack the factors, A = [w_1 s_1 A_1; w_2 s_2 A_2; ...], B = [B_1 B_2 ...]. Then
  B A = Σ w_i s_i B_i A_i exactly, at rank Σ r_i.
- "svd" (and "ties_svd", "dare_linear_svd", "dare_ties_svd", "magnitude_prune_svd"): merge the
  full ΔW_i matrices, then keep the best rank-`svd_rank` approximation, U S V^T truncated
  (Eckart-Young): B = U S, A = V^T. Exact if svd_rank reaches the rank of the sum; costs one SVD of
  an (out, in) matrix per layer.
- "linear" (and "ties", "dare_linear", "dare_ties", "magnitude_prune"): merge the A_i with each
  other and the B_i with each other. Cheap, same rank, but only an approximation: the product
  (Σ b_i B_i)(Σ a_i A_i) has cross terms B_i A_j. The weight w_i s_i is split as
  sqrt|w_i s_i| on each factor (its sign on A), so with one adapter the result is exact.

The new adapter's scale is 1 (lora_alpha = r): the weights and the old scales are inside its
factors. It is added, not activated, as in peft, and is an ordinary LoRA adapter (it saves, loads,
merges like any other).

Differences from peft 0.21, each for a reason: a taken `adapter_name` is an error (peft returns
silently, so a re-run cell would keep the old result); DoRA adapters are refused (peft combines
their B A and drops their magnitude vectors); the new adapter gets use_rslora=False (peft copies
it, which rescales the result by sqrt(r)); when a layer's rank is below the new rank
(rank_pattern), its factors are zero-padded to the rank the config states; density must be in
(0, 1] and is required where it is used.
"""
import math
from dataclasses import replace

import torch

from peftlab.merging import merge

from .modules_to_save import ModulesToSaveWrapper

SAME_RANK = ("linear", "ties", "dare_linear", "dare_ties", "magnitude_prune")
SVD = ("svd", "ties_svd", "dare_linear_svd", "dare_ties_svd", "magnitude_prune_svd")
COMBINATIONS = (*SVD, "cat", *SAME_RANK)
WITH_DENSITY = ("ties", "dare_linear", "dare_ties", "magnitude_prune")   # also their _svd forms
WITH_SIGN = ("ties", "dare_ties")


def max_rank(config) -> int:
    """The largest rank any layer of the adapter has (rank_pattern included)."""
    return max([config.r, *config.rank_pattern.values()])


def new_target_modules(configs: list) -> list[str] | str:
    """Where the new adapter goes: every layer any input targets (peft's rule)."""
    targets = [c.target_modules for c in configs]
    if all(isinstance(t, list) for t in targets):
        return sorted(set().union(*targets))
    if all(isinstance(t, str) for t in targets):
        if len(set(targets)) == 1:          # also keeps "all-linear", which is not a regex
            return targets[0]
        if "all-linear" in targets:
            raise ValueError("Adapters with target_modules='all-linear' can only be combined with other "
                             "'all-linear' adapters; give them the same target_modules.")
        return "|".join(f"({t})" for t in targets)                     # a regex matching any of them
    raise ValueError("The adapters' target_modules mix lists of names and regular expressions (strings); "
                     "combining them is not supported (as in peft). Give them the same kind of target_modules.")


def check(tuner, adapters, weights, adapter_name, combination_type, svd_rank, density, majority_sign_method):
    """Refuse what cannot be combined; return (combination type, new rank, target_modules)."""
    if not adapters or len(weights) != len(adapters):
        raise ValueError(f"Give one weight per adapter: {len(adapters)} adapters, {len(weights)} weights.")
    unknown = [a for a in adapters if a not in tuner.peft_config]
    if unknown:
        raise ValueError(f"Unknown adapter names {unknown}; this model has: {', '.join(tuner.peft_config)}.")
    if adapter_name in tuner.peft_config:
        raise ValueError(f"Adapter name {adapter_name!r} is taken; pick another name for the combined "
                         "adapter, or delete_adapter it first.")
    if combination_type not in COMBINATIONS:
        raise ValueError(f"Invalid combination_type {combination_type!r}; choose one of {', '.join(COMBINATIONS)}.")
    configs = [tuner.peft_config[a] for a in adapters]
    dora = [a for a, c in zip(adapters, configs) if c.use_dora]
    if dora:
        raise ValueError(f"DoRA adapters {dora} cannot be combined: only their low-rank updates B A would be "
                         "merged and their magnitude vectors lost. Combine plain LoRA adapters, or fold DoRA "
                         "adapters into the weights with merge_and_unload().")
    shared = [n for n, w in tuner.wrappers() if isinstance(w, ModulesToSaveWrapper)
              and sum(a in w.modules_to_save for a in adapters) > 1]
    if shared:
        raise ValueError(f"Several of the adapters train their own copy of {shared} (modules_to_save); full "
                         "copies cannot be combined like low-rank updates (peft refuses too).")
    base = combination_type.removesuffix("_svd")
    if base in WITH_DENSITY and density is None:
        raise ValueError(f"combination_type={combination_type!r} prunes each adapter first: give density, "
                         "the fraction of entries kept, in (0, 1] (e.g. density=0.5).")
    if density is not None and not 0 < density <= 1:
        raise ValueError(f"density is the fraction of entries kept, in (0, 1]; got {density!r}.")
    if base in WITH_SIGN and majority_sign_method not in ("total", "frequency"):
        raise ValueError(f"majority_sign_method must be 'total' or 'frequency', got {majority_sign_method!r}.")

    kind = "linear" if len(adapters) == 1 else combination_type      # one adapter: nothing to resolve
    ranks = [max_rank(c) for c in configs]
    if kind in SAME_RANK:
        if len(set(ranks)) != 1:
            raise ValueError(f"combination_type={kind!r} merges the factors entry by entry, so all adapters need "
                             f"the same rank; got {dict(zip(adapters, ranks))}. Use 'cat' or 'svd' instead.")
        rank = ranks[0]
    elif kind == "cat":
        rank = sum(ranks)
    else:
        rank = svd_rank or max(ranks)
    return kind, rank, new_target_modules(configs)


def svd_factors(delta: torch.Tensor, rank: int, clamp: float | None, full_matrices: bool, driver: str | None):
    """The best rank-`rank` factors B (out, k), A (k, in) of delta (out, in): B = U S, A = V^T."""
    U, S, Vh = torch.linalg.svd(delta, full_matrices=full_matrices, driver=driver)
    k = min(rank, S.numel())
    B, A = U[:, :k] @ torch.diag(S[:k]), Vh[:k]                             # (out, k), (k, in)
    if clamp is not None:   # cut outlying entries: the `clamp` quantile of all entries, +- (kohya's scripts)
        limit = torch.quantile(torch.cat([B.flatten(), A.flatten()]), clamp)
        B, A = B.clamp(-limit, limit), A.clamp(-limit, limit)
    return B, A


def combined_factors(layer, present, kind, rank, density, majority_sign_method, svd_options):
    """(A, B) of the new adapter in one layer, from the adapters `present` there, [(name, weight)]."""
    if kind == "cat":
        A = torch.cat([layer.A(a) * w * layer.scaling[a] for a, w in present])         # (Σ r_i, in)
        B = torch.cat([layer.B(a) for a, _ in present], dim=1)                         # (out, Σ r_i)
        return A, B
    if kind in SVD:
        # Merged in the layout the layer stores (W^T for Conv1D and embeddings), as peft does, so
        # that DARE's random masks fall on the same entries for the same seed.
        t = layer.transposed
        deltas = [layer.get_delta_weight(a).T if t else layer.get_delta_weight(a) for a, _ in present]
        kind = "linear" if kind == "svd" else kind.removesuffix("_svd")
        delta = merge(kind, deltas, [w for _, w in present], density, majority_sign_method)
        B, A = svd_factors(delta.T if t else delta, rank, **svd_options)
        return A, B
    ranks = {layer.r[a] for a, _ in present}
    if len(ranks) != 1:
        raise ValueError(f"{layer.module_name}: the adapters have ranks {sorted(ranks)} here (rank_pattern); "
                         f"combination_type={kind!r} needs equal ranks. Use 'cat' or 'svd'.")
    scaled = [w * layer.scaling[a] for a, w in present]
    on_A = [math.sqrt(abs(x)) * (1 if x >= 0 else -1) for x in scaled]   # the sign on one factor only
    on_B = [math.sqrt(abs(x)) for x in scaled]
    A = merge(kind, [layer.A(a) for a, _ in present], on_A, density, majority_sign_method)
    B = merge(kind, [layer.B(a) for a, _ in present], on_B, density, majority_sign_method)
    return A, B


def add_weighted_adapter(tuner, adapters: list[str], weights: list[float], adapter_name: str,
                         combination_type: str = "svd", svd_rank: int | None = None, svd_clamp: float | None = None,
                         svd_full_matrices: bool = True, svd_driver: str | None = None, density: float | None = None,
                         majority_sign_method: str = "total") -> None:
    """Add adapter `adapter_name` combining `adapters` with `weights` (see the module docstring).

    combination_type: "svd" (default), "linear", "cat", "ties", "ties_svd", "dare_linear",
        "dare_ties", "dare_linear_svd", "dare_ties_svd", "magnitude_prune", "magnitude_prune_svd".
        "linear" and its relatives need equal ranks. With one adapter, "linear" is used.
    svd_rank: rank of the result of the *_svd types (default: the largest input rank).
    svd_clamp: a quantile (e.g. 0.99): clamp the SVD factors' entries to +- that quantile.
    svd_full_matrices, svd_driver: passed to torch.linalg.svd (driver: CUDA only).
    density: the fraction of entries kept by TIES' trim, DARE's drop, magnitude pruning.
    majority_sign_method: TIES' sign election, "total" (by mass) or "frequency" (by count).
    """
    kind, rank, targets = check(tuner, adapters, weights, adapter_name, combination_type, svd_rank,
                                density, majority_sign_method)
    # The weights and the inputs' scales go into the factors, so the new scale is 1: lora_alpha = r.
    config = replace(tuner.peft_config[adapters[0]], r=rank, lora_alpha=rank, target_modules=targets,
                     rank_pattern={}, alpha_pattern={}, use_rslora=False)
    tuner.add_adapter(adapter_name, config)
    svd_options = {"clamp": svd_clamp, "full_matrices": svd_full_matrices, "driver": svd_driver}
    try:
        with torch.no_grad():
            for layer in tuner.adapter_layers():
                present = [(a, w) for a, w in zip(adapters, weights) if a in layer]
                if present and adapter_name not in layer:
                    raise ValueError(f"The combined adapter's target_modules {targets!r} miss {layer.module_name}, "
                                     f"where {[a for a, _ in present]} live (different layers_to_transform?).")
                if adapter_name not in layer:
                    continue
                new_A, new_B = layer.A(adapter_name), layer.B(adapter_name)    # (rank, in), (out, rank)
                new_A.zero_(), new_B.zero_()
                if not present:
                    continue
                A, B = combined_factors(layer, present, kind, rank, density, majority_sign_method, svd_options)
                new_A[:A.shape[0]] = A     # a lower rank here (rank_pattern, small layer): zero-padded
                new_B[:, :B.shape[1]] = B
    except Exception:
        tuner.remove(adapter_name)
        del tuner.peft_config[adapter_name]
        raise
