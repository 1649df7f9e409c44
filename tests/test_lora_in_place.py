"""LoRA adds s·B A x into the base layer's output in place when no one else can see that output
(tuners/lora.py, `_output_is_private`). These tests pin what that must not change: values,
gradients, what a hook on the base layer sees, and bf16's single rounding."""
import pytest
import torch
from lora_testutils import build, inputs, one_thread, output, perturb  # noqa: F401 (autouse fixture)
from torch import nn

from peftlab import LoraConfig, get_peft_model

TARGETS = {"gpt2": ["c_attn", "c_fc", "wpe"], "llama": ["q_proj", "down_proj", "embed_tokens"]}


def adapted(arch):
    model = get_peft_model(build(arch), LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS[arch],
                                                    init_lora_weights=False))
    perturb(model)
    return model


def out_of_place(monkeypatch):
    """Force the out-of-place path, the reference."""
    from peftlab.tuners.lora import LoraLayer
    monkeypatch.setattr(LoraLayer, "_output_is_private", lambda self, result: False)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])   # GPT-2's Conv1D returns a view: no in-place while recording
def test_in_place_gives_the_same_outputs_and_gradients(arch, monkeypatch):
    def run(model):
        model.train()
        out = output(model, arch)
        out.pow(2).mean().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        with torch.no_grad():
            infer = output(model.eval(), arch)
        return out.detach(), grads, infer

    fast = run(adapted(arch))
    out_of_place(monkeypatch)
    slow = run(adapted(arch))
    assert torch.equal(fast[0], slow[0]) and torch.equal(fast[2], slow[2])
    assert fast[1].keys() == slow[1].keys() and len(fast[1]) > 0
    for name in fast[1]:
        assert torch.equal(fast[1][name], slow[1][name]), name


@pytest.mark.parametrize("grad", [False, True])
def test_a_hook_on_the_base_layer_keeps_the_base_output(grad):
    model = adapted("llama")
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    seen = []
    layer.base_layer.register_forward_hook(lambda module, args, out: seen.append(out))
    x = torch.randn(2, 3, layer.in_features)
    with torch.set_grad_enabled(grad):
        adapted_out = layer(x)
        base_out = nn.functional.linear(x, layer.base_layer.weight, layer.base_layer.bias)
    assert torch.equal(seen[0], base_out)              # the hook's tensor was not written into
    assert not torch.equal(adapted_out, base_out)      # and the adapter did change the layer's output


def test_in_place_only_where_no_one_else_sees_the_output():
    model = adapted("llama").eval()
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    x = torch.randn(2, 3, layer.in_features)
    with torch.no_grad():
        assert layer._output_is_private(layer.base_layer(x))
        base = layer.base_layer(x)
        view = base.view(-1, base.shape[-1])
    assert not layer._output_is_private(view)          # a view with autograd recording: out of place
    with torch.no_grad():
        assert layer._output_is_private(view)          # without autograd a view is just memory


def test_bf16_base_with_fp32_adapter_rounds_once(monkeypatch):
    def run():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(16, 16)).to(torch.bfloat16)
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["0"], init_lora_weights=False))
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.float()                # fp32 adapter on a bf16 base, as QLoRA trains
        with torch.no_grad():
            return model(torch.randn(5, 16, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16))

    fast = run()
    out_of_place(monkeypatch)
    assert fast.dtype == torch.bfloat16 and torch.equal(fast, run())
