"""Checkers for 09_p_tuning."""
import torch

from .checking import Verdict, attempted, call_stub, report


def check_encoder_parameter_count(answer) -> Verdict:
    """🌱 Trainable numbers of an MLP prompt encoder: P = 20 virtual tokens, d = 768, H = 768."""
    if not attempted(answer):
        return report("MLP encoder parameter count", None)
    P, d, H = 20, 768, 768
    table, mlp = P * d, (d * H + H) + (H * H + H) + (H * d + d)
    if answer == table + mlp:
        return report("MLP encoder parameter count", True,
                      f"{table + mlp:,}, of which only the {table:,} of the input table are per virtual token; "
                      f"after training, just the {P * d:,} numbers of the output are kept.")
    if answer == table + 3 * d * H:
        return report("MLP encoder parameter count", False, "close: each of the three Linear layers has a bias too.")
    if answer == mlp:
        return report("MLP encoder parameter count", False, "the MLP is right; add the input table h (P x d), it trains too.")
    if answer == P * d:
        return report("MLP encoder parameter count", False,
                      "that is the soft prompt itself (what is saved); during training the MLP's weights train too.")
    return report("MLP encoder parameter count", False,
                  "count the input table (P x d) and three Linear layers d->H, H->H, H->d, with biases.")


def check_prepend_prompt(fn) -> Verdict:
    """🌿 [prompt; embeds] for every row, and P ones in front of the attention mask."""
    g = torch.Generator().manual_seed(0)
    prompt, embeds = torch.randn(3, 5, generator=g), torch.randn(2, 4, 5, generator=g)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    result = call_stub(fn, prompt, embeds, mask)
    if not attempted(result):
        return report("prepend the prompt", None)
    if not (isinstance(result, tuple) and len(result) == 2):
        return report("prepend the prompt", False, "return a pair: (new input embeddings, new attention mask).")
    new_embeds, new_mask = result
    if tuple(new_embeds.shape) != (2, 7, 5):
        return report("prepend the prompt", False, f"embeddings of shape {tuple(new_embeds.shape)}, expected "
                      "(B, P + n, d) = (2, 7, 5): expand the (P, d) prompt to every row, then cat on dim 1.")
    if torch.allclose(new_embeds[:, -3:], prompt.expand(2, -1, -1)):
        return report("prepend the prompt", False, "the prompt is at the end; it goes *in front* of the input.")
    if not (torch.equal(new_embeds[:, :3], prompt.expand(2, -1, -1)) and torch.equal(new_embeds[:, 3:], embeds)):
        return report("prepend the prompt", False, "wrong values: row b should read [p_1..p_P, x_b1..x_bn].")
    expected_mask = torch.cat([torch.ones(2, 3, dtype=mask.dtype), mask], dim=1)
    if tuple(new_mask.shape) != (2, 7):
        return report("prepend the prompt", False, f"mask of shape {tuple(new_mask.shape)}, expected (B, P + n) = (2, 7).")
    if not torch.equal(new_mask.long(), expected_mask):
        return report("prepend the prompt", False,
                      "the virtual tokens are always visible: P ones in front, then the original mask.")
    return report("prepend the prompt", True, "this is what peftlab.tuners.soft_prompts.forward does before the frozen model.")


def check_nearest_tokens(fn) -> Verdict:
    """🌳 For each virtual token, the k vocabulary ids of highest cosine similarity, best first."""
    g = torch.Generator().manual_seed(1)
    vocab = torch.randn(30, 6, generator=g) * torch.linspace(0.1, 5.0, 30).unsqueeze(1)   # very unequal norms
    prompt = torch.randn(4, 6, generator=g)
    result = call_stub(fn, prompt, vocab, 3)
    if not attempted(result):
        return report("nearest tokens", None)
    result = torch.as_tensor(result)
    if tuple(result.shape) != (4, 3):
        return report("nearest tokens", False, f"shape {tuple(result.shape)}, expected (P, k) = (4, 3).")
    cosine = torch.nn.functional.normalize(prompt, dim=-1) @ torch.nn.functional.normalize(vocab, dim=-1).T
    expected = cosine.topk(3, dim=-1).indices
    if torch.equal(result.long(), expected):
        return report("nearest tokens", True, "cosine ignores the vectors' lengths, so long embeddings do not win by size.")
    if torch.equal(result.long(), (prompt @ vocab.T).topk(3, dim=-1).indices):
        return report("nearest tokens", False, "that is the dot product: normalise both sides first (cosine).")
    if torch.equal(result.long(), torch.cdist(prompt, vocab).topk(3, dim=-1, largest=False).indices):
        return report("nearest tokens", False, "that is Euclidean distance; the notebook ranks by cosine similarity.")
    if torch.equal(result.long().sort(-1).values, expected.sort(-1).values):
        return report("nearest tokens", False, "the right tokens, in the wrong order: best (highest cosine) first.")
    return report("nearest tokens", False, "cos(p, e) = p.e / (|p| |e|); take topk over the vocabulary dimension.")


ORDER_TOLERANCE = 0.1   # "about the same": within 4 of the 40 test countries


def check_token_order(prediction, measured) -> Verdict:
    """🌿 Predict, then run: does the trained prompt still work with its virtual tokens in reverse order?
    `prediction`: True (exact match stays within ORDER_TOLERANCE) or False; `measured`: the learner's
    {"trained order": exact match, "reversed": exact match} on the test countries."""
    title = "the order of the virtual tokens"
    if not (attempted(prediction) and attempted(measured)):
        return report(title, None)
    if not isinstance(prediction, bool):
        return report(title, False, f"predict True (reversed stays within {ORDER_TOLERANCE} of the trained order) or False.")
    if not isinstance(measured, dict) or set(measured) != {"trained order", "reversed"}:
        return report(title, False, 'measure both: {"trained order": exact_match(...), "reversed": exact_match(...)}.')
    if any(not 0 <= value <= 1 for value in measured.values()):
        return report(title, False, "an exact match is a share of the test countries, between 0 and 1.")
    drop = measured["trained order"] - measured["reversed"]
    same = abs(drop) <= ORDER_TOLERANCE + 1e-9   # 4 of 40 countries is 0.1 exactly, whatever the float rounding
    summary = f"trained order {measured['trained order']:.3f}, reversed {measured['reversed']:.3f}"
    if same:
        lesson = ("the order barely mattered here: the prompt acts more like a set of vectors the query attends "
                  "to than like a sentence.")
    else:
        lesson = ("the order matters: the virtual tokens are read causally at positions 0..P-1 (rotary "
                  "positions), so each was trained for its place and for what comes before it. A soft prompt is "
                  "a sequence, not a bag of vectors, which is also why P-tuning's LSTM tries to tie neighbours together.")
    if prediction != same:
        return report(title, False, f"measured {summary}: you predicted {'about the same' if prediction else 'a drop'}, "
                      f"but {lesson}")
    return report(title, True, f"measured {summary}: {lesson}")
