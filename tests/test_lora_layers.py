"""What is LoRA's own: scaling, init, DoRA's magnitude and detached norm, PiSSA, dropout, embeddings,
dtypes, mixed batches. (The invariants every method shares are in test_conformance.py.)"""
import math

import pytest
import torch
from lora_testutils import build, inputs, one_thread, output, perturb  # noqa: F401 (autouse fixture)
from torch import nn

from peftlab import LoraConfig, get_peft_model
from peftlab.tuners.dora import DoraVariant
from peftlab.tuners.lora import LoraEmbedding, LoraLinear

# GPT-2: Conv1D (weights stored transposed) and an untied embedding (wpe); Llama: nn.Linear.
TARGETS = {"gpt2": ["c_attn", "c_fc", "wpe"], "llama": ["q_proj", "down_proj", "embed_tokens"]}
VARIANTS = {"lora": {}, "rslora": {"use_rslora": True}, "dora": {"use_dora": True}}


def adapted(arch, variant="lora", init=False, **kw):
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS[arch], init_lora_weights=init,
                     **VARIANTS[variant], **kw)
    model = get_peft_model(build(arch), cfg)
    perturb(model)   # non-zero B, magnitudes different from the weight norms
    return model.eval()


def test_disable_or_switch_while_merged_is_refused():
    model = adapted("gpt2")
    model.merge_adapter()
    with pytest.raises(ValueError, match="unmerge_adapter"):
        with model.disable_adapter():
            pass
    with pytest.raises(ValueError, match="unmerge_adapter"):
        model.set_adapter("default")


@pytest.mark.parametrize("rslora", [False, True])
def test_scaling_alpha_over_r_or_sqrt_r(rslora):
    model = get_peft_model(build("mlp"), LoraConfig(r=16, lora_alpha=8, target_modules=["fc1"],
                                                    use_rslora=rslora, init_lora_weights=False))
    layer = model.get_base_model().fc1
    s = 8 / math.sqrt(16) if rslora else 8 / 16
    assert layer.scaling["default"] == s
    torch.testing.assert_close(layer.get_delta_weight("default"), s * layer.B("default") @ layer.A("default"))
    x = torch.randn(5, 8)
    with torch.no_grad():
        expected = layer.base_layer(x) + s * x @ (layer.B("default") @ layer.A("default")).T
    torch.testing.assert_close(model(x=x), model.get_base_model().fc2(torch.relu(expected)))


def test_dora_magnitude_starts_at_the_weight_norms():
    model = get_peft_model(build("gpt2"), LoraConfig(r=4, target_modules=["c_attn", "wpe"], use_dora=True))
    m = model.get_base_model()
    conv = m.transformer.h[0].attn.c_attn           # Conv1D weight (in, out): norms over dim 0
    torch.testing.assert_close(conv.lora_magnitude_vector["default"], conv.base_layer.weight.norm(dim=0))
    emb = m.transformer.wpe                          # Embedding (vocab, dim): per embedding dim
    torch.testing.assert_close(emb.lora_magnitude_vector["default"], emb.base_layer.weight.norm(dim=0))
    llama = get_peft_model(build("llama"), LoraConfig(r=4, target_modules=["q_proj"], use_dora=True))
    q = llama.get_base_model().model.layers[0].self_attn.q_proj   # nn.Linear (out, in): norms over dim 1
    torch.testing.assert_close(q.lora_magnitude_vector["default"], q.base_layer.weight.norm(dim=1))


@pytest.mark.parametrize("arch,name", [("llama", "model.layers.0.self_attn.q_proj"),
                                       ("gpt2", "transformer.h.0.attn.c_attn"), ("gpt2", "transformer.wpe")])
def test_dora_norm_without_forming_the_matrix_equals_the_direct_norm(arch, name):
    layer = adapted(arch, "dora").get_base_model().get_submodule(name)
    W, delta = layer.get_base_weight(), layer.get_delta_weight("default")
    direct = torch.linalg.vector_norm(W + delta, dim=1)
    torch.testing.assert_close(DoraVariant.norm(layer, "default"), direct, rtol=1e-5, atol=1e-6)


def test_dora_norm_is_detached_in_the_backward_pass():
    """The gradient must be that of m * (W + sBA) x / c with c = ||W + sBA|| a constant."""
    model = get_peft_model(build("mlp"), LoraConfig(r=2, target_modules=["fc1"], use_dora=True,
                                                    init_lora_weights=False))
    layer = model.get_base_model().fc1
    x = torch.randn(4, 8)
    layer(x).square().sum().backward()
    magnitude = layer.lora_magnitude_vector["default"]
    W, A, B, m = (t.detach().clone().requires_grad_() for t in
                  (layer.base_layer.weight, layer.A("default"), layer.B("default"), magnitude))
    s = layer.scaling["default"]
    V = W + s * B @ A
    c = V.norm(dim=1).detach()
    ((m / c)[:, None] * V @ x.T + layer.base_layer.bias[:, None]).square().sum().backward()
    torch.testing.assert_close(layer.lora_B["default"].weight.grad, B.grad)
    torch.testing.assert_close(layer.lora_magnitude_vector["default"].grad, m.grad)


def test_pissa_init_rewrites_the_base_and_everything_undoes_it():
    base = build("llama")
    w0 = base.model.layers[0].self_attn.q_proj.weight.detach().clone()
    expected = output(build("llama"), "llama")
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights="pissa"))
    q = model.get_base_model().model.layers[0].self_attn.q_proj
    U, S, Vh = torch.linalg.svd(w0)
    torch.testing.assert_close(q.get_delta_weight("default"), U[:, :4] @ torch.diag(S[:4]) @ Vh[:4], atol=1e-5, rtol=0)
    torch.testing.assert_close(q.base_layer.weight, w0 - q.get_delta_weight("default"), atol=1e-6, rtol=0)
    torch.testing.assert_close(output(model, "llama"), expected, atol=1e-5, rtol=0)   # same model at init
    perturb(model)
    trained = output(model, "llama")
    with model.disable_adapter():   # the original base, not the residual
        torch.testing.assert_close(output(model, "llama"), expected, atol=1e-5, rtol=0)
    merged = model.merge_and_unload()
    torch.testing.assert_close(output(merged, "llama"), trained, atol=1e-5, rtol=0)
    pissa = LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights="pissa")
    restored = get_peft_model(build("llama"), pissa).unload()
    torch.testing.assert_close(restored.model.layers[0].self_attn.q_proj.weight, w0, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="PiSSA"):
        model = get_peft_model(build("llama"), LoraConfig(target_modules=["q_proj"], init_lora_weights="pissa"))
        model.add_adapter("second", LoraConfig(target_modules=["q_proj"]))


def test_dropout_is_active_in_training_only():
    model = get_peft_model(build("mlp"), LoraConfig(r=4, target_modules=["fc1"], lora_dropout=0.5,
                                                    init_lora_weights=False))
    x = torch.randn(16, 8)
    model.eval()
    assert torch.equal(model(x=x), model(x=x))
    model.train()
    assert not torch.equal(model(x=x), model(x=x))


def test_embedding_lora_is_the_transposed_update_of_the_table():
    model = adapted("llama")
    emb = model.get_base_model().model.embed_tokens
    assert isinstance(emb, LoraEmbedding)
    ids = inputs("llama")["input_ids"]
    table = emb.base_layer.weight + emb.get_delta_weight("default").T    # (vocab, dim)
    torch.testing.assert_close(emb(ids), table[ids])


def test_bf16_base_trains_with_fp32_adapters():
    torch.manual_seed(0)
    model = get_peft_model(build("llama").to(torch.bfloat16),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj", "embed_tokens"], use_dora=True))
    assert {p.dtype for n, p in model.named_parameters() if p.requires_grad} == {torch.float32}
    model.train()
    ids = inputs("llama")["input_ids"]
    out = model(input_ids=ids, labels=ids)
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and g.dtype == torch.float32 for g in grads) and any(g.abs().sum() > 0 for g in grads)
    perturb(model)
    model.eval()
    unmerged = model(input_ids=ids).logits.float()
    model.merge_adapter()
    assert model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight.dtype == torch.bfloat16
    torch.testing.assert_close(model(input_ids=ids).logits.float(), unmerged, atol=0.1, rtol=0.05)


def test_mixed_batch_routes_each_example_through_its_adapter():
    model = get_peft_model(build("bert"), LoraConfig(r=4, target_modules=["query", "value"], init_lora_weights=False,
                                                     modules_to_save=["classifier"]))
    model.add_adapter("other", LoraConfig(r=2, target_modules=["value", "key"], use_dora=True,
                                          init_lora_weights=False, modules_to_save=["classifier"]))
    for name in ("default", "other"):
        model.set_adapter(name)
        perturb(model, seed=len(name))
    model.eval()
    ids = inputs("bert", batch=5)["input_ids"]
    names = ["default", "other", "__base__", "other", "default"]
    mixed = model(input_ids=ids, adapter_names=names).logits
    separate = {}
    for name in ("default", "other"):
        model.set_adapter(name)
        separate[name] = model(input_ids=ids).logits
    with model.disable_adapter():
        separate["__base__"] = model(input_ids=ids).logits
    torch.testing.assert_close(mixed, torch.stack([separate[n][i] for i, n in enumerate(names)]), atol=1e-6, rtol=0)
    assert not torch.allclose(separate["default"], separate["other"], atol=1e-3)

    with pytest.raises(ValueError, match="one adapter name per example"):
        model(input_ids=ids, adapter_names=names[:2])
    with pytest.raises(ValueError, match="Unknown adapter names"):
        model(input_ids=ids, adapter_names=["nope"] * 5)
    model.train()
    with pytest.raises(ValueError, match="eval mode"):
        model(input_ids=ids, adapter_names=names)
    model.eval()
    model.merge_adapter()
    with pytest.raises(ValueError, match="merged"):
        model(input_ids=ids, adapter_names=names)


def test_wrapper_keeps_base_attributes_visible():
    model = get_peft_model(build("mlp"), LoraConfig(target_modules=["fc1"]))
    fc1 = model.get_base_model().fc1
    assert isinstance(fc1, LoraLinear) and fc1.in_features == 8 and fc1.weight is fc1.base_layer.weight
    assert isinstance(fc1.base_layer, nn.Linear)
