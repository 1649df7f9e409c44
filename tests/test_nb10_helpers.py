"""Exercise checkers for notebook 10 (prefix tuning): stub -> not attempted, right -> True, wrong -> a hint."""
import torch

from peftlab.course.exercises import NOT_ATTEMPTED
from peftlab.course.exercises import nb10_prefix_tuning as nb10


def stub(*_):
    raise NotImplementedError


def test_parameter_count_checker(capsys):
    assert not nb10.check_prefix_parameter_count(None)
    assert NOT_ATTEMPTED in capsys.readouterr().out
    assert nb10.check_prefix_parameter_count(32 * 2 * 10 * 8 * 128)
    capsys.readouterr()
    assert not nb10.check_prefix_parameter_count(32 * 2 * 10 * 32 * 128)
    assert "key/value heads" in capsys.readouterr().out
    assert not nb10.check_prefix_parameter_count(32 * 10 * 8 * 128)
    assert "times 2" in capsys.readouterr().out


def _split(flat, L, heads, head_dim):
    kv = flat.view(flat.shape[0], L, 2, heads, head_dim).permute(1, 2, 3, 0, 4)
    return kv[:, 0], kv[:, 1]


def test_split_prefix_checker(capsys):
    assert not nb10.check_split_prefix(stub)
    assert NOT_ATTEMPTED in capsys.readouterr().out
    assert nb10.check_split_prefix(_split)
    capsys.readouterr()
    assert not nb10.check_split_prefix(lambda *a: _split(*a)[::-1])
    assert "swapped" in capsys.readouterr().out

    def all_keys_first(flat, L, heads, head_dim):
        kv = flat.view(flat.shape[0], 2, L, heads, head_dim).permute(2, 1, 3, 0, 4)
        return kv[:, 0], kv[:, 1]
    assert not nb10.check_split_prefix(all_keys_first)
    assert "per layer" in capsys.readouterr().out
    assert not nb10.check_split_prefix(lambda flat, L, h, d: (flat, flat))
    assert "shapes" in capsys.readouterr().out


def test_gate_checker(capsys):
    assert not nb10.check_gate(stub)
    assert NOT_ATTEMPTED in capsys.readouterr().out
    assert nb10.check_gate(lambda attn, P: attn[..., :P].sum(-1))
    capsys.readouterr()
    assert not nb10.check_gate(lambda attn, P: attn[..., -P:].sum(-1))
    assert "front" in capsys.readouterr().out
    assert not nb10.check_gate(lambda attn, P: attn[..., :P].mean(-1))
    assert "sum" in capsys.readouterr().out
    assert not nb10.check_gate(lambda attn, P: attn.sum(-1))
    assert "first P" in capsys.readouterr().out


def test_prefix_layout_matches_the_library():
    """The notebook's split (the 🌿 solution) reads peftlab's prefix as prefix_cache does."""
    from peftlab import PrefixTuningConfig
    from peftlab.tuners.prefix_tuning import prefix_cache
    config = PrefixTuningConfig(num_virtual_tokens=3, num_layers=2, num_attention_heads=2, token_dim=8)
    flat = torch.randn(3, 2 * 2 * 8)
    keys, values = _split(flat, 2, 2, 4)
    cache = prefix_cache(flat, config, None, batch_size=1)
    for layer in range(2):
        torch.testing.assert_close(cache.layers[layer].keys[0], keys[layer])
        torch.testing.assert_close(cache.layers[layer].values[0], values[layer])
