"""The memory arithmetic agrees with the tensors PyTorch really allocates."""
import pytest
import torch

from peftlab.memory import measured_bytes, memory_breakdown, parameter_counts


def tied_model():
    emb = torch.nn.Embedding(10, 6)
    head = torch.nn.Linear(6, 10, bias=False)
    head.weight = emb.weight                       # tied, like the bundled model
    return torch.nn.Sequential(emb, torch.nn.Linear(6, 6), head)


def test_counts_tied_parameters_once():
    model = tied_model()
    counts = parameter_counts(model)
    assert counts["total"] == 60 + 42 and counts["trainable"] == 102 and counts["percent"] == 100.0
    model[1].requires_grad_(False)
    assert parameter_counts(model)["trainable"] == 60


@pytest.mark.parametrize("precision, per_param", [("fp32", 16), ("mixed", 16)])
def test_full_finetuning_costs_16_bytes_per_parameter(precision, per_param):
    assert memory_breakdown(1000, precision=precision)["total"] == per_param * 1000


def test_frozen_parameters_cost_only_their_weights():
    parts = memory_breakdown(1000, trainable=10, precision="mixed")
    assert parts["weights"] == 2000 and parts["gradients"] == 20 and parts["Adam moments"] == 80
    assert parts["total"] == 2000 + 10 * 14


def test_prediction_matches_measured_adam_training_state():
    model = tied_model()
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.arange(4)).sum().backward()
    optimizer.step()
    real, predicted = measured_bytes(model, optimizer), memory_breakdown(102, precision="fp32")
    for part in ("weights", "gradients", "Adam moments", "total"):
        assert real[part] == predicted[part]


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="fp32"):
        memory_breakdown(10, precision="fp8")
    with pytest.raises(ValueError, match="between 0 and total"):
        memory_breakdown(10, trainable=11)


def test_llama_shapes_give_the_published_sizes_and_qlora_fits_65b_in_48_gb():
    from peftlab.memory import LLAMA_SHAPES, llama_parameters, lora_parameters
    from peftlab.widgets import finetuning_memory
    sizes = {name: llama_parameters(*shape) / 1e9 for name, shape in LLAMA_SHAPES.items()}
    assert [round(s, 1) for s in sizes.values()] == [6.7, 13.0, 32.5, 65.3]   # Touvron et al. 2023: 6.7, 13, 32.5, 65.2
    assert lora_parameters(*LLAMA_SHAPES["65B"], r=64) == 80 * 64 * (8 * 8192 + 3 * (8192 + 22016))
    need = {m: finetuning_memory("65B", m)["total"] for m in ("full", "LoRA", "QLoRA")}
    assert need["full"] > 780e9 and need["LoRA"] > 80e9 and need["QLoRA"] < 48e9


def test_frozen_bits_price_only_the_frozen_parameters():
    full = memory_breakdown(1000, 10, precision="mixed")
    quantized = memory_breakdown(1000, 10, precision="mixed", frozen_bits=4)
    assert full["weights"] == 2 * 1000 and quantized["weights"] == 2 * 10 + 990 // 2
    assert {k: v for k, v in full.items() if k not in ("weights", "total")} == \
        {k: v for k, v in quantized.items() if k not in ("weights", "total")}


def test_qlora_calculator_titles_the_total_and_follows_its_buttons():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from peftlab.widgets import finetuning_memory, qlora_memory_calculator
    box = qlora_memory_calculator()
    size, method, rank, _ = box.children
    assert plt.gcf().axes[0].get_title() == "LLaMA-65B, QLoRA: 46.5 GB"
    size.value, method.value, rank.value = "7B", "LoRA", 8
    expected = finetuning_memory("7B", "LoRA", 8)["total"] / 1e9
    assert plt.gcf().axes[0].get_title() == f"LLaMA-7B, LoRA: {expected:,.1f} GB"
    plt.close("all")
