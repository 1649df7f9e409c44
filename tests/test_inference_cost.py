"""Counting a forward pass's operations and timing it: what notebook 07 builds its latency claims on."""
import copy

import pytest
from lora_testutils import build, inputs, one_thread, perturb  # noqa: F401 (autouse fixture)

from peftlab import BottleneckConfig, IA3Config, LoraConfig, get_peft_model
from peftlab.workbook.inference_cost import fastest_forward_ms, forward_operations


def operation_total(model, batch) -> int:
    return sum(forward_operations(model, batch).values())


def test_counting_sees_every_linear_layer():
    model, batch = build("gpt2"), inputs("gpt2")
    linears = sum(1 for m in model.modules() if type(m).__name__ in ("Linear", "Conv1D"))
    calls = forward_operations(model, batch)
    # transformers' Conv1D calls addmm, nn.Linear calls linear: one call per layer either way
    assert calls["linear"] + calls["addmm"] == linears


@pytest.mark.parametrize("config", [LoraConfig(r=4, target_modules=["c_attn"]), IA3Config()],
                         ids=["lora", "ia3"])
def test_a_merged_model_calls_exactly_what_the_base_calls(config):
    base, batch = build("gpt2"), inputs("gpt2")
    tuned = get_peft_model(copy.deepcopy(base), config)
    perturb(tuned)                                                               # B != 0, so merging changes W
    assert operation_total(tuned, batch) > operation_total(base, batch)          # unmerged: the extra branch runs
    assert forward_operations(tuned.merge_and_unload(), batch) == forward_operations(base, batch)


def test_an_adapter_adds_operations_that_cannot_be_merged_away():
    base, batch = build("gpt2"), inputs("gpt2")
    adapted = get_peft_model(copy.deepcopy(base), BottleneckConfig(mh_adapter=True))
    extra = forward_operations(adapted, batch) - forward_operations(base, batch)
    blocks = base.config.n_layer
    assert extra["linear"] >= 2 * 2 * blocks     # down and up, after attention and after the MLP, per block


def test_timing_returns_a_positive_time_per_model_and_refuses_zero_rounds():
    base, batch = build("gpt2"), inputs("gpt2")
    times = fastest_forward_ms({"a": base, "b": base}, batch, rounds=2, calls=1)
    assert set(times) == {"a", "b"} and all(0 < t < 1e4 for t in times.values())
    with pytest.raises(ValueError, match="rounds and calls must be at least 1"):
        fastest_forward_ms({"a": base}, batch, rounds=0)
