"""What is their own in bottleneck adapters, (IA)^3, BitFit and LayerNorm tuning: where they sit,
what they compute, what they refuse. (The invariants every method shares are in test_conformance.py.)"""
import pytest
import torch
import torch.nn.functional as F
from lora_testutils import build, inputs, one_thread, output, perturb  # noqa: F401 (autouse fixture)

import peftlab
from peftlab import BitFitConfig, BottleneckConfig, IA3Config, LNTuningConfig, get_peft_model
from peftlab.tuners.bottleneck import BottleneckLayer
from peftlab.tuners.ln_tuning import LNTuningLayer


# --- bottleneck adapters ----------------------------------------------------------------------------
@pytest.mark.parametrize("placement,wrapped", [
    ({"mh_adapter": True}, ["self_attn", "mlp"]),                 # Houlsby: after both blocks
    ({}, ["mlp"]),                                                # Pfeiffer: after the feed-forward block
    ({"mh_adapter": True, "output_adapter": False}, ["self_attn"]),
])
def test_adapter_placement_follows_the_config(placement, wrapped):
    model = get_peft_model(build("llama"), BottleneckConfig(**placement))
    found = sorted({n.rsplit(".", 1)[-1] for n, m in model.get_base_model().named_modules()
                    if isinstance(m, BottleneckLayer)})
    assert found == sorted(wrapped)
    assert model.peft_config["default"].target_modules == wrapped   # recorded, as in peft


@pytest.mark.parametrize("parallel", [False, True])
def test_an_adapter_computes_its_formula(parallel):
    """Sequential: h + s * up(f(down(h))) on the block's output h; parallel: on its input x."""
    model = get_peft_model(build("mlp"), BottleneckConfig(target_modules=["fc1"], reduction_factor=4,
                                                          non_linearity="tanh", is_parallel=parallel, scaling=2.0))
    perturb(model)
    fc1, x = model.get_base_model().fc1, torch.randn(5, 8)
    down, up = fc1.adapter_down["default"], fc1.adapter_up["default"]
    h = fc1.base_layer(x)
    assert down.weight.shape == ((4, 8) if parallel else (4, 16))   # 16 // 4 = 4 in the middle
    torch.testing.assert_close(fc1(x), h + 2.0 * up(torch.tanh(down(x if parallel else h))))


def test_bottleneck_config_errors_say_what_to_do():
    with pytest.raises(ValueError, match="non_linearity must be one of relu"):
        BottleneckConfig(non_linearity="sigmoid")
    with pytest.raises(ValueError, match="nowhere to put an adapter"):
        BottleneckConfig(output_adapter=False)
    with pytest.raises(ValueError, match="target_modules is required for MLP with BOTTLENECK"):
        get_peft_model(build("mlp"), BottleneckConfig())


# --- (IA)^3 -------------------------------------------------------------------------------------------
def test_ia3_rescales_outputs_of_keys_and_values_and_the_input_of_the_feed_forward_layer():
    model = get_peft_model(build("llama"), IA3Config())          # peft's default: k, v, down_proj
    perturb(model)
    layer = model.get_base_model().model.layers[0]
    x_attn, x_ff = torch.randn(2, 3, 32), torch.randn(2, 3, 64)
    v, down = layer.self_attn.v_proj, layer.mlp.down_proj
    assert v.ia3_l["default"].shape == (16, 1) and down.ia3_l["default"].shape == (1, 64)   # GQA: v is 16 wide
    torch.testing.assert_close(v(x_attn), v.base_layer(x_attn) * v.ia3_l["default"].flatten())
    torch.testing.assert_close(down(x_ff), down.base_layer(x_ff * down.ia3_l["default"].flatten()))
    trainable, _ = model.get_nb_trainable_parameters()
    assert trainable == 2 * (16 + 16 + 64)    # per layer: l_k and l_v (key/value width), l_ff (FFN width)


def test_ia3_feedforward_modules_must_be_targets():
    with pytest.raises(ValueError, match="feed-forward module must also be a target"):
        IA3Config(target_modules=["k_proj"], feedforward_modules=["down_proj"])


# --- BitFit -------------------------------------------------------------------------------------------
def test_bitfit_refuses_a_model_without_biases_and_a_layer_without_one():
    with pytest.raises(ValueError, match="LlamaForCausalLM has none.*pico-gpt2-1m"):
        get_peft_model(build("llama"), BitFitConfig())
    with pytest.raises(ValueError, match="BITFIT wraps only layers that have a bias term"):
        get_peft_model(build("llama"), BitFitConfig(target_modules=["q_proj"]))


def test_bitfit_as_an_adapter_takes_the_same_steps_as_training_the_biases_themselves():
    """Δb trained from zero with b frozen, and b trained directly: the same AdamW steps, so
    b0 + Δb equals the directly trained b (weight decay off; dropout off, so that both runs see
    the same function). Up to 1e-5: the key biases' gradient is zero in exact arithmetic (softmax
    ignores a constant added to every key), and Adam turns float noise there into tiny steps."""
    batch = inputs("gpt2", batch=4)
    direct = build("gpt2")
    for name, p in direct.named_parameters():
        p.requires_grad_(name.endswith(".bias"))
    adapter = get_peft_model(build("gpt2"), BitFitConfig())
    runs = []
    for model in (direct, adapter):
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0)
        for _ in range(3):
            model(**batch, labels=batch["input_ids"]).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        runs.append(model)
    assert sum(p.numel() for p in runs[1].parameters() if p.requires_grad) == \
        sum(p.numel() for p in runs[0].parameters() if p.requires_grad)
    merged = adapter.merge_and_unload()
    for (name, b), (_, merged_b) in zip(direct.named_parameters(), merged.named_parameters()):
        if name.endswith(".bias"):
            torch.testing.assert_close(merged_b, b, rtol=0, atol=1e-5, msg=name)


# --- LayerNorm tuning ---------------------------------------------------------------------------------
def test_ln_tuning_trains_copies_of_the_norms_and_nothing_else():
    model = get_peft_model(build("llama"), LNTuningConfig())   # peft's default: both norms of each block, and the last
    norms = [n for n, m in model.get_base_model().named_modules() if isinstance(m, LNTuningLayer)]
    assert len(norms) == 2 * 2 + 1 and type(model.get_base_model().model.norm.base_layer).__name__ == "LlamaRMSNorm"
    trainable, _ = model.get_nb_trainable_parameters()
    assert trainable == 5 * 32                                  # RMSNorm: one vector each, no bias
    with pytest.raises(ValueError, match="LN_TUNING wraps only normalisation layers"):
        get_peft_model(build("llama"), LNTuningConfig(target_modules=["q_proj"]))


def test_ln_tuning_on_gpt2_tunes_gain_and_bias_and_merges_them():
    model = get_peft_model(build("gpt2"), LNTuningConfig())
    perturb(model)
    expected = output(model.eval(), "gpt2")
    ln = model.get_base_model().transformer.ln_f
    tuned = ln.ln_tuning_layers["default"]
    torch.testing.assert_close(ln(torch.ones(1, 32)), F.layer_norm(torch.ones(1, 32), (32,), tuned.weight, tuned.bias))
    merged = model.merge_and_unload()
    assert torch.equal(merged.transformer.ln_f.weight, tuned.weight)
    torch.testing.assert_close(output(merged, "gpt2"), expected, rtol=0, atol=1e-6)


def test_the_new_methods_are_exported_with_their_peft_types():
    types = {c.peft_type for c in (BitFitConfig, BottleneckConfig, IA3Config, LNTuningConfig)}
    assert types == {"BITFIT", "BOTTLENECK", "IA3", "LN_TUNING"} <= {t.value for t in peftlab.PeftType}
