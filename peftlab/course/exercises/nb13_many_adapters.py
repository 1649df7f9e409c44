"""Checkers for 13_many_adapters."""
import torch

from .checking import Verdict, attempted, call_stub, judge_prediction, report

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


HALF = (0.5, 0.5)


def half_merge_capitals(model, tokenizer, rows) -> float:
    """Capitals exact match on `rows` of the cat merge of the model's "sentiment" and "capitals" adapters
    at weights HALF, built under a name of its own and deleted afterwards (the model's adapters stay)."""
    from peftlab.workbook.evaluate import exact_match
    active, name = model.active_adapter, "checker_half_merge"
    model.add_weighted_adapter(["sentiment", "capitals"], list(HALF), name, combination_type="cat")
    try:
        model.set_adapter(name)
        return exact_match(model, tokenizer, rows)
    finally:
        model.set_adapter(active)
        model.delete_adapter(name)


def check_half_merge(prediction, measured, model, tokenizer, rows, full_weight_score) -> Verdict:
    """🌳 Predict, then measure: does halving both task vectors (cat at weights 0.5, 0.5) raise the
    capitals score above the (1, 1) merge's `full_weight_score`? `prediction`: True or False;
    `measured`: the learner's capitals exact match of that merge on `rows`, measured again here."""
    title = "a merge at half weight"
    if not (attempted(prediction) and attempted(measured)):
        return report(title, None)
    if not isinstance(prediction, bool):
        return report(title, False, "predict True (the half-weight merge scores higher on capitals) or False.")
    if not isinstance(measured, (int, float)) or not 0 <= measured <= 1:
        return report(title, False, "pass the capitals exact match of the half-weight merge: a share between 0 and 1.")
    truth = half_merge_capitals(model, tokenizer, rows)
    if abs(measured - truth) > 1e-9:
        return report(title, False, f"measured again here, the cat merge at weights {HALF} scores {truth:.3f} on these "
                      f"countries, not {measured:.3f}: merge with add_weighted_adapter(['sentiment', 'capitals'], "
                      "[0.5, 0.5], ..., combination_type='cat'), set it active, and score capitals_test.")
    higher = truth > full_weight_score
    lesson = ("Each task vector was fitted to act alone at full strength; summed, they push the shared q and v "
              "projections twice. Halving both can leave each task too weak to work, or remove enough of the "
              "interference to help: which one wins is an empirical question, which is why task arithmetic "
              "chooses its weight on validation data (Ilharco et al. 2023), as the stored runs over seeds do.")
    return judge_prediction(title, "higher" if prediction else "not higher", "higher" if higher else "not higher",
                            f"capitals exact match: weights (1, 1) {full_weight_score:.3f}, weights {HALF} {truth:.3f}",
                            lesson)
