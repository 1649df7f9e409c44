"""The unified view of He et al. (2022, *Towards a Unified View of Parameter-Efficient Transfer
Learning*, arXiv:2110.04366): every method is a change Δh added to some hidden state h. This module
reads a trained method's parameters in that form, so notebook 12 can check each equivalence on real
tensors, and notebook 10's prefix-as-gated-adapter split lives here for both notebooks to use.

- LoRA is a parallel adapter on one weight: Δh = s · (x A^T) B^T, no nonlinearity.
- A (parallel) bottleneck adapter: Δh = s · (f(x W_down + b_down) W_up + b_up), on a whole block.
- Prefix tuning: each head's output becomes λ(x) · (attention over the prefix) + (1 - λ(x)) · (the
  head without it), so Δh = λ(x) · (prefix part - h): a parallel adapter with a gate.
- (IA)^3 rescales: h ↦ l ⊙ h, so Δh = (l - 1) ⊙ h. BitFit shifts: Δh = Δb, the same for every x.
"""
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from peftlab.tuners.bitfit import BitFitLayer
from peftlab.tuners.bottleneck import BottleneckLayer
from peftlab.tuners.ia3 import IA3Linear
from peftlab.tuners.lora import LoraLayer


@dataclass
class ParallelAdapter:
    """Δh = scale · (activation(x @ down + down_bias) @ up + up_bias): down (in, r), up (r, out)."""
    down: torch.Tensor
    up: torch.Tensor
    scale: float
    activation: Callable[[torch.Tensor], torch.Tensor] = nn.Identity()
    down_bias: torch.Tensor | None = None
    up_bias: torch.Tensor | None = None

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        middle = x @ self.down + (0 if self.down_bias is None else self.down_bias)
        return self.scale * (self.activation(middle) @ self.up + (0 if self.up_bias is None else self.up_bias))


def _layer_of(layer: nn.Module, kind: type, method: str) -> nn.Module:
    if not isinstance(layer, kind):
        raise TypeError(f"expected a {method} layer ({kind.__name__}), got {type(layer).__name__}: pass a module "
                        f"that get_peft_model wrapped with {method}, e.g. model.get_submodule('...q_proj').")
    return layer


def _adapter(table, name: str):
    """table[name], or an error that lists the adapters the layer has."""
    if name not in table:
        raise KeyError(f"no adapter {name!r} in this layer; it has {sorted(table)}")
    return table[name]


@torch.no_grad()
def lora_as_parallel_adapter(layer: nn.Module, name: str = "default") -> ParallelAdapter:
    """A LoRA layer's update as a parallel adapter on its weight: down = A^T, up = B^T, scale = α/r
    (or α/√r with rsLoRA), no nonlinearity and no biases. DoRA is not of this form (it rescales)."""
    layer = _layer_of(layer, LoraLayer, "LoRA")
    scale = float(_adapter(layer.scaling, name))
    if layer.lora_variant.get(name) is not None:
        raise ValueError("a DoRA layer rescales the whole weight by its magnitude: it is not a plain parallel "
                         "adapter. Use a LoRA adapter (use_dora=False).")
    A, B = layer.A(name), layer.B(name)                                   # (r, in), (out, r)
    return ParallelAdapter(down=A.T.clone(), up=B.T.clone(), scale=scale)


@torch.no_grad()
def bottleneck_as_parallel_adapter(layer: nn.Module, name: str = "default") -> ParallelAdapter:
    """A bottleneck adapter in the same form; it reads the block's input if parallel, its output if not."""
    layer = _layer_of(layer, BottleneckLayer, "bottleneck adapter")
    down, up = _adapter(layer.adapter_down, name), layer.adapter_up[name]
    return ParallelAdapter(down=down.weight.T.clone(), up=up.weight.T.clone(), scale=float(layer.adapter_scaling[name]),
                           activation=layer.adapter_act[name], down_bias=down.bias.clone(), up_bias=up.bias.clone())


@torch.no_grad()
def ia3_rescaling(layer: nn.Module, name: str = "default") -> tuple[torch.Tensor, str]:
    """(l, where): the (IA)^3 vector, flattened, and whether it rescales the layer's "output"
    (keys, values: h = l ⊙ Wx) or its "input" (feed-forward layers: h = W(l ⊙ x))."""
    layer = _layer_of(layer, IA3Linear, "(IA)^3")
    vector = _adapter(layer.ia3_l, name).flatten().clone()
    return vector, "input" if layer.is_feedforward[name] else "output"


@torch.no_grad()
def bitfit_shift(layer: nn.Module, name: str = "default") -> torch.Tensor:
    """BitFit's Δb: the change it adds to the layer's output, whatever the input."""
    layer = _layer_of(layer, BitFitLayer, "BitFit")
    return _adapter(layer.bitfit_bias, name).clone()


# --- prefix tuning as a gated adapter (He et al. §3.1) ---------------------------------------------

@contextmanager
def eager_attention(model: nn.Module):
    """Eager attention for a while: it is the implementation that returns attention weights."""
    hf_model = model.get_base_model() if hasattr(model, "get_base_model") else model
    previous = hf_model.config._attn_implementation   # read only: transformers has no public getter
    hf_model.set_attn_implementation("eager")
    try:
        yield
    finally:
        hf_model.set_attn_implementation(previous)


def _decoder_layers(model: nn.Module) -> nn.ModuleList:
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers"):
        raise TypeError(f"expected a Llama-style causal LM (model.model.layers), got {type(model).__name__}")
    return inner.layers


@torch.no_grad()
def _heads_and_output(model: nn.Module, layer: nn.Module, batch: dict, head_dim: int, **kwargs):
    """Run `model`; return what `layer`'s heads output (o_proj's input) as (B, heads, n, head_dim), and the output."""
    captured = []
    handle = layer.self_attn.o_proj.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    try:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs)
    finally:
        handle.remove()
    return captured[0].unflatten(-1, (-1, head_dim)).transpose(1, 2), out


@torch.no_grad()
def prefix_gate(peft_model, batch: dict) -> torch.Tensor:
    """λ(x) in every layer: the attention mass each real token puts on the P prefix positions,
    averaged over heads: (layers, B, n)."""
    P = peft_model.peft_config[peft_model.active_adapter].num_virtual_tokens
    with eager_attention(peft_model.get_base_model()):
        out = peft_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_attentions=True)
    return torch.stack([weights[..., :P].sum(-1).mean(1) for weights in out.attentions])


@torch.no_grad()
def prefix_split(peft_model, batch: dict) -> dict[str, torch.Tensor]:
    """Layer 0's heads with a prefix, and the parts He et al. split them into; all (B, heads, n, ·):
    "heads" (with the prefix), "gate" λ(x) (…, 1), "from_prefix" (softmax over the prefix keys alone,
    times the prefix values) and "without_prefix" (the same heads in the frozen model). Then
    heads = gate · from_prefix + (1 - gate) · without_prefix, exactly. Only in layer 0 are the real
    tokens' keys and values the same with and without the prefix; deeper, they differ."""
    config = peft_model.peft_config[peft_model.active_adapter]
    if type(config).__name__ != "PrefixTuningConfig":
        raise TypeError(f"prefix_split needs a prefix-tuning model, got a {type(config).__name__}")
    base = peft_model.get_base_model()
    layer0 = _decoder_layers(base)[0]
    P, L, kv_heads = config.num_virtual_tokens, config.num_layers, config.num_attention_heads
    head_dim = config.token_dim // kv_heads
    with eager_attention(base):
        heads, out = _heads_and_output(peft_model, layer0, batch, head_dim, output_attentions=True)
    without, _ = _heads_and_output(base, layer0, batch, head_dim)              # the base alone: no prefix
    weights = out.attentions[0]                                                 # (B, heads, n, P + n)
    gate = weights[..., :P].sum(-1, keepdim=True)                              # (B, heads, n, 1)
    prefix = peft_model.prompt_encoder[peft_model.active_adapter]()            # (P, L * 2 * token_dim)
    values = prefix.view(P, 2 * L, kv_heads, head_dim)[:, 1].transpose(0, 1)   # layer 0's values: (kv, P, hd)
    values = values.repeat_interleave(weights.shape[1] // kv_heads, dim=0)     # one per query head
    return {"heads": heads, "gate": gate, "from_prefix": (weights[..., :P] / gate) @ values, "without_prefix": without}


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """The names no other point beats: no other has a cost as low and a score as high, one of them
    strictly. points: name -> (cost, score). Sorted by cost."""
    def beaten(cost, score):
        return any(c <= cost and s >= score and (c, s) != (cost, score) for c, s in points.values())
    return sorted((name for name, (cost, score) in points.items() if not beaten(cost, score)),
                  key=lambda name: points[name])
