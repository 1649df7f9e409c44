"""The unified view's readings (peftlab/course/unified_view.py): each method's layer equals its Δh form."""
import pytest
import torch

from peftlab import get_peft_model
from peftlab.course.unified_view import (
    bitfit_shift,
    bottleneck_as_parallel_adapter,
    ia3_rescaling,
    lora_as_parallel_adapter,
    pareto_front,
    prefix_gate,
    prefix_split,
)
from peftlab.tuners import BitFitConfig, BottleneckConfig, IA3Config, LoraConfig, PrefixTuningConfig
from peftlab.workbook import PromptTargetCollator, load_base_model, load_task


def perturbed(model, seed=0):
    """Every trainable tensor moved off its initial value (LoRA's B = 0 would make Δh = 0 trivially)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, generator=generator))
    return model


def layers_of(model, kind):
    return [m for m in model.modules() if isinstance(m, kind)]


X = torch.randn(2, 5, 128, generator=torch.Generator().manual_seed(1))


def test_lora_is_a_parallel_adapter_on_its_weight():
    from peftlab.tuners.lora import LoraLayer
    model = perturbed(get_peft_model(load_base_model()[0], LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"])))
    layer = layers_of(model, LoraLayer)[0]
    adapter = lora_as_parallel_adapter(layer)
    assert adapter.down.shape == (128, 2) and adapter.up.shape == (2, 128) and adapter.scale == 2.0
    with torch.no_grad():
        torch.testing.assert_close(layer(X), layer.base_layer(X) + adapter.delta(X), atol=1e-6, rtol=1e-5)
    with pytest.raises(KeyError, match="default"):
        lora_as_parallel_adapter(layer, "other")


def test_dora_is_refused_with_a_reason():
    from peftlab.tuners.lora import LoraLayer
    model = get_peft_model(load_base_model()[0], LoraConfig(r=2, target_modules=["q_proj"], use_dora=True))
    with pytest.raises(ValueError, match="magnitude"):
        lora_as_parallel_adapter(layers_of(model, LoraLayer)[0])


def test_a_parallel_bottleneck_adapter_adds_its_delta_of_the_block_input():
    from peftlab.tuners.bottleneck import BottleneckLayer
    config = BottleneckConfig(is_parallel=True, reduction_factor=16, scaling=4.0)
    model = perturbed(get_peft_model(load_base_model()[0], config))
    layer = next(m for m in layers_of(model, BottleneckLayer) if m.module_name.endswith("mlp"))
    adapter = bottleneck_as_parallel_adapter(layer)
    with torch.no_grad():
        torch.testing.assert_close(layer(X), layer.base_layer(X) + adapter.delta(X), atol=1e-6, rtol=1e-5)


def test_ia3_rescales_outputs_of_keys_and_inputs_of_feedforward_layers():
    from peftlab.tuners.ia3 import IA3Linear
    model = perturbed(get_peft_model(load_base_model()[0], IA3Config()))
    wheres = set()
    for layer in layers_of(model, IA3Linear):
        vector, where = ia3_rescaling(layer)
        wheres.add(where)
        x = torch.randn(2, 3, layer.base_layer.in_features)
        with torch.no_grad():
            expected = layer.base_layer(x) * vector if where == "output" else layer.base_layer(x * vector)
            torch.testing.assert_close(layer(x), expected, atol=1e-6, rtol=1e-5)
    assert wheres == {"input", "output"}


def test_bitfit_shifts_every_input_by_the_same_vector():
    from peftlab.tuners.bitfit import BitFitLayer
    model = perturbed(get_peft_model(load_base_model("pico-gpt2-1m")[0], BitFitConfig()))
    layer = next(m for m in layers_of(model, BitFitLayer) if m.module_name.endswith("c_fc"))
    shift = bitfit_shift(layer)
    for seed in (0, 1):
        x = torch.randn(2, 3, 128, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            torch.testing.assert_close(layer(x) - layer.base_layer(x), shift.expand(2, 3, -1), atol=1e-5, rtol=1e-5)


def test_wrong_layer_type_says_what_was_expected():
    with pytest.raises(TypeError, match="LoRA layer"):
        lora_as_parallel_adapter(torch.nn.Linear(2, 2))


def test_a_prefix_is_a_gated_adapter_in_layer_0():
    model, tokenizer = load_base_model()
    peft_model = perturbed(get_peft_model(model, PrefixTuningConfig(num_virtual_tokens=4)))
    rows = [load_task("sentiment")["test"][i] for i in range(4)]
    batch = PromptTargetCollator(tokenizer)(rows)
    split = prefix_split(peft_model, batch)
    rebuilt = split["gate"] * split["from_prefix"] + (1 - split["gate"]) * split["without_prefix"]
    real = batch["attention_mask"].bool()[:, None, :].expand(-1, split["heads"].shape[1], -1)
    torch.testing.assert_close(rebuilt[real], split["heads"][real], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(split["heads"][real], split["without_prefix"][real], atol=1e-3), "the prefix matters"
    gate = prefix_gate(peft_model, batch)
    assert gate.shape == (4, *batch["input_ids"].shape) and ((gate > 0) & (gate < 1)).all()
    torch.testing.assert_close(gate[0], split["gate"].squeeze(-1).mean(1))


def test_prefix_split_refuses_other_methods():
    model = get_peft_model(load_base_model()[0], LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(TypeError, match="prefix-tuning"):
        prefix_split(model, {})


def test_pareto_front():
    points = {"cheap": (1, 0.5), "mid": (10, 0.9), "beaten": (20, 0.8), "best": (100, 1.0), "tie": (10, 0.9)}
    assert pareto_front(points) == ["cheap", "mid", "tie", "best"]
    assert pareto_front({"a": (1, 1.0), "b": (2, 0.5)}) == ["a"]
    assert pareto_front({}) == []
