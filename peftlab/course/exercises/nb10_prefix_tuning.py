"""Checkers for 10_prefix_tuning."""
import torch

from .checking import Verdict, attempted, call_stub, report


def check_prefix_parameter_count(answer) -> Verdict:
    """🌱 Trained numbers of a prefix without reparameterisation for a Llama-3-8B-shaped model:
    32 layers, 32 query heads, 8 key/value heads, head_dim 128, P = 10."""
    if not attempted(answer):
        return report("prefix parameter count", None)
    L, q_heads, kv_heads, head_dim, P = 32, 32, 8, 128, 10
    right = L * 2 * P * kv_heads * head_dim
    if answer == right:
        return report("prefix parameter count", True,
                      f"{right:,}: the cache holds key/value heads (8), not query heads, so the prefix does too.")
    if answer == L * 2 * P * q_heads * head_dim:
        return report("prefix parameter count", False,
                      "you counted the 32 query heads; with grouped-query attention the cache has only the 8 key/value heads.")
    if answer == L * P * kv_heads * head_dim:
        return report("prefix parameter count", False, "each layer gets P keys *and* P values: times 2.")
    if answer == 2 * P * kv_heads * head_dim:
        return report("prefix parameter count", False, "that is one layer; prefix tuning puts a prefix in all 32.")
    return report("prefix parameter count", False, "layers x 2 (keys, values) x P x key/value heads x head_dim.")


def _flat_prefix(P=3, L=2, heads=2, head_dim=4):
    return torch.arange(P * L * 2 * heads * head_dim, dtype=torch.float32).view(P, L * 2 * heads * head_dim)


def check_split_prefix(fn) -> Verdict:
    """🌿 peft's flat prefix (P, L*2*heads*head_dim) -> keys, values, each (L, heads, P, head_dim)."""
    P, L, heads, head_dim = 3, 2, 2, 4
    flat = _flat_prefix(P, L, heads, head_dim)
    result = call_stub(fn, flat, L, heads, head_dim)
    if not attempted(result):
        return report("split the prefix", None)
    if not (isinstance(result, tuple) and len(result) == 2):
        return report("split the prefix", False, "return a pair: (keys, values).")
    keys, values = result
    shape = (L, heads, P, head_dim)
    if tuple(keys.shape) != shape or tuple(values.shape) != shape:
        return report("split the prefix", False, f"shapes {tuple(keys.shape)} and {tuple(values.shape)}, "
                      f"expected (L, heads, P, head_dim) = {shape} each.")
    kv = flat.view(P, L, 2, heads, head_dim).permute(1, 2, 3, 0, 4)          # (L, 2, heads, P, head_dim)
    if torch.equal(keys, kv[:, 0]) and torch.equal(values, kv[:, 1]):
        return report("split the prefix", True, "row i holds token i's key and value for every layer: "
                      "[layer 0 key | layer 0 value | layer 1 key | ...].")
    if torch.equal(keys, kv[:, 1]) and torch.equal(values, kv[:, 0]):
        return report("split the prefix", False, "keys and values swapped: within a layer the key block comes first.")
    wrong = flat.view(P, 2, L, heads, head_dim).permute(2, 1, 3, 0, 4)
    if torch.equal(keys, wrong[:, 0]) and torch.equal(values, wrong[:, 1]):
        return report("split the prefix", False, "the blocks go per layer (key, value of layer 0, then of layer 1), "
                      "not all keys then all values: view as (P, L, 2, heads, head_dim).")
    return report("split the prefix", False, "view the rows as (P, L, 2, heads, head_dim), then move P next to head_dim.")


def check_gate(fn) -> Verdict:
    """🌳 Attention mass on the P prefix positions: weights (B, H, n, P + n) -> (B, H, n)."""
    g = torch.Generator().manual_seed(0)
    P, n = 3, 4
    attn = torch.randn(2, 2, n, P + n, generator=g).softmax(-1)
    result = call_stub(fn, attn, P)
    if not attempted(result):
        return report("the gate lambda(x)", None)
    result = torch.as_tensor(result)
    if tuple(result.shape) != (2, 2, n):
        return report("the gate lambda(x)", False, f"shape {tuple(result.shape)}, expected (B, H, n) = (2, 2, {n}).")
    if torch.allclose(result, attn[..., :P].sum(-1)):
        return report("the gate lambda(x)", True, "a fraction in (0, 1) per query; 1 - lambda goes to the real tokens.")
    if torch.allclose(result, attn[..., -P:].sum(-1)):
        return report("the gate lambda(x)", False, "the prefix is in *front* of the keys: the first P columns.")
    if torch.allclose(result, attn[..., :P].mean(-1)):
        return report("the gate lambda(x)", False, "a share of the mass is a sum over the P columns, not a mean.")
    return report("the gate lambda(x)", False, "sum the softmax weights of the first P key positions.")


DEPTH_CHOICES = ("deep P=2", "shallow P=8")


def check_depth_or_length(prediction, measured) -> Verdict:
    """🌿 Predict, then run: at the same 1,024 trained numbers, a deep prefix of P = 2 or a shallow prompt
    of P = 8: which reaches the lower records test loss? `prediction`: one of DEPTH_CHOICES; `measured`:
    the learner's {choice: test loss} for both."""
    title = "depth or length?"
    if not (attempted(prediction) and attempted(measured)):
        return report(title, None)
    if prediction not in DEPTH_CHOICES:
        return report(title, False, f"predict one of {DEPTH_CHOICES}.")
    if not isinstance(measured, dict) or set(measured) != set(DEPTH_CHOICES):
        return report(title, False, f"measure the test loss of both, as a dict with the keys {DEPTH_CHOICES}.")
    if any(not (isinstance(v, (int, float)) and v > 0) for v in measured.values()):
        return report(title, False, "a test loss is a positive number of nats per token.")
    winner = min(DEPTH_CHOICES, key=measured.get)
    summary = ", ".join(f"{k}: {measured[k]:.3f}" for k in DEPTH_CHOICES)
    if winner == "deep P=2":
        lesson = ("two virtual tokens in every layer beat eight at the input, at the same count: where the numbers "
                  "sit matters more than how many there are (P-tuning v2's argument).")
    else:
        lesson = ("here the longer shallow prompt won at the same count: two virtual keys per layer are too few "
                  "to steer the model, so depth alone is not the whole story.")
    if prediction != winner:
        return report(title, False, f"test loss {summary}: the lower is {winner!r}, not {prediction!r}; {lesson}")
    return report(title, True, f"test loss {summary}: {lesson}")
