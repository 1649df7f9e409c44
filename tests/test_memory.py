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
