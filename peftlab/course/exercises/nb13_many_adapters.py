"""Checkers for 13_many_adapters."""
import torch

from .checking import Verdict, attempted, call_stub, report

# pico-llama-1m: 4 layers; q_proj 128 -> 128, v_proj 128 -> 64; both adapters r=4
LAYERS, WIDTH, Q_OUT, V_OUT, R = 4, 128, 128, 64, 4


def check_cat_size(rank, numbers) -> Verdict:
    """🌱 rank and stored numbers of the cat combination of two r=4 adapters on q_proj and v_proj."""
    if not (attempted(rank) and attempted(numbers)):
        return report("the size of a cat combination", None)
    right_rank = 2 * R
    per_rank = (WIDTH + Q_OUT) + (WIDTH + V_OUT)                          # A row + B column, q and v
    right = LAYERS * right_rank * per_rank
    if rank == right_rank and numbers == right:
        return report("the size of a cat combination", True, f"rank {right_rank}, {right:,} numbers: cat stacks the "
                      "factors, so ranks (and sizes) add up. That is the price of being exact.")
    if rank == R:
        return report("the size of a cat combination", False, "cat stacks A_1 on A_2 and B_1 beside B_2: the ranks add.")
    if rank != right_rank:
        return report("the size of a cat combination", False, "rank = r_1 + r_2.")
    if numbers == LAYERS * right_rank * 2 * (WIDTH + Q_OUT):
        return report("the size of a cat combination", False, "v_proj has 64 outputs, not 128 (grouped-query attention).")
    if numbers == LAYERS * R * per_rank:
        return report("the size of a cat combination", False, "that is one r=4 adapter; the combination has rank 8.")
    if numbers == right_rank * per_rank:
        return report("the size of a cat combination", False, "there are 4 layers, each with a q_proj and a v_proj.")
    return report("the size of a cat combination", False, "per layer and per rank: A has `in` numbers, B has `out`; "
                  "for q and v, times 4 layers, times the rank.")


def mixed_reference(x, W, adapters, names):
    out = x @ W.T
    for i, name in enumerate(names):
        if name != "__base__":
            A, B, scaling = adapters[name]
            out[i] = out[i] + scaling * (x[i] @ A.T @ B.T)
    return out


def _mixed_case():
    g = torch.Generator().manual_seed(0)
    x, W = torch.randn(5, 3, 6, generator=g), torch.randn(4, 6, generator=g)
    adapters = {"a": (torch.randn(2, 6, generator=g), torch.randn(4, 2, generator=g), 2.0),
                "b": (torch.randn(3, 6, generator=g), torch.randn(4, 3, generator=g), 0.5)}
    return x, W, adapters, ["a", "b", "__base__", "b", "a"]


def check_mixed_lora(fn) -> Verdict:
    """🌿 mixed_lora(x, W, adapters, names) -> each row through its own adapter."""
    x, W, adapters, names = _mixed_case()
    try:
        answer = call_stub(fn, x.clone(), W, adapters, list(names))
    except KeyError as error:
        return report("mixed-batch LoRA", False, f"KeyError {error}: '__base__' is not an adapter, it means "
                      "'no adapter' for that row.")
    if not attempted(answer):
        return report("mixed-batch LoRA", None)
    answer = torch.as_tensor(answer).detach()
    right = mixed_reference(x, W, adapters, names)
    if answer.shape != right.shape:
        return report("mixed-batch LoRA", False, f"shape {tuple(answer.shape)}; expected (batch, seq, out) = "
                      f"{tuple(right.shape)}: x @ W.T, plus each row's low-rank term.")
    if torch.allclose(answer, right, atol=1e-5):
        return report("mixed-batch LoRA", True, "the base product is shared, only the B A terms are routed: "
                      "that is all a mixed batch is.")
    unscaled = {k: (A, B, 1.0) for k, (A, B, _) in adapters.items()}
    if torch.allclose(answer, mixed_reference(x, W, unscaled, names), atol=1e-5):
        return report("mixed-batch LoRA", False, "each adapter's term is multiplied by its scaling.")
    if torch.allclose(answer, mixed_reference(x, W, adapters, [names[0]] * len(names)), atol=1e-5):
        return report("mixed-batch LoRA", False, "every row went through the first row's adapter: use names[i] "
                      "for row i.")
    if torch.allclose(answer, mixed_reference(x, W, adapters, ["a" if n == "__base__" else n for n in names]),
                      atol=1e-5) or torch.allclose(answer, x @ W.T, atol=1e-5):
        return report("mixed-batch LoRA", False, "rows named '__base__' get the base output only; the others "
                      "add their own adapter's term.")
    return report("mixed-batch LoRA", False, "out = x @ W.T; then for row i with adapter (A, B, s): "
                  "out[i] += s * x[i] @ A.T @ B.T.")


def check_cat_factors(prediction, fn) -> Verdict:
    """🌳 predict which combination_type is exact, then stack factors into one adapter."""
    if not attempted(prediction):
        return report("an exact combination", None)
    choice = str(prediction).strip().strip('"\'').lower()
    if choice != "cat":
        hints = {"linear": "linear merges A's with A's and B's with B's: (B_1 + B_2)(A_1 - A_2) has cross terms.",
                 "svd": "svd keeps the best rank-r approximation, r = 4 by default, of a sum of rank up to 8."}
        return report("an exact combination", False, hints.get(choice, "one of 'cat', 'linear', 'svd'."))
    g = torch.Generator().manual_seed(1)
    factors = [(torch.randn(2, 5, generator=g), torch.randn(3, 2, generator=g), 2.0),
               (torch.randn(3, 5, generator=g), torch.randn(3, 3, generator=g), 0.5)]
    weights = [1.0, -0.75]
    answer = call_stub(fn, factors, weights)
    if not attempted(answer):
        return report("an exact combination", None)
    A, B = (torch.as_tensor(t).detach() for t in answer)
    want = sum(w * s * b @ a for (a, b, s), w in zip(factors, weights))
    if A.shape[0] != 5 or B.shape[1] != 5:
        return report("an exact combination", False, f"A is {tuple(A.shape)} and B {tuple(B.shape)}: stacking "
                      "gives rank 2 + 3 = 5, A (5, in) and B (out, 5).")
    product = B @ A
    if torch.allclose(product, want, atol=1e-5):
        return report("an exact combination", True, "'cat': stacked factors multiply out to exactly the weighted "
                      "sum, at rank r_1 + r_2.")
    if torch.allclose(product, sum(w * w * s * b @ a for (a, b, s), w in zip(factors, weights)), atol=1e-5):
        return report("an exact combination", False, "the weight went on both A and B, so it counts twice "
                      "(w², and the sign is lost): put w on one factor only.")
    if torch.allclose(product, sum(w * b @ a for (a, b, s), w in zip(factors, weights)), atol=1e-5):
        return report("an exact combination", False, "the new adapter has scale 1: fold each old scaling s_i in.")
    if torch.allclose(product, sum(abs(w) * s * b @ a for (a, b, s), w in zip(factors, weights)), atol=1e-5):
        return report("an exact combination", False, "the negative weight lost its sign.")
    return report("an exact combination", False, "A = [w_1 s_1 A_1; w_2 s_2 A_2] (torch.cat on dim 0), "
                  "B = [B_1 B_2] (torch.cat on dim 1).")
