"""The training loop: schedules, what trains, history, determinism, clear errors."""
import pytest
import torch

from peftlab.workbook.training import History, lr_factor, train


class Regression(torch.nn.Module):
    """A model with a HF-style output (an object with `.loss`)."""

    def __init__(self):
        super().__init__()
        self.frozen = torch.nn.Linear(4, 4)
        self.head = torch.nn.Linear(4, 1)
        self.frozen.requires_grad_(False)

    def forward(self, x, y):
        return type("Output", (), {"loss": torch.nn.functional.mse_loss(self.head(self.frozen(x)), y)})


def data(n=64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return [{"x": xi, "y": xi.sum(-1, keepdim=True)} for xi in x]


def collate(rows):
    return {"x": torch.stack([r["x"] for r in rows]), "y": torch.stack([r["y"] for r in rows])}


def test_schedules():
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(99, 100, 10, "linear") == pytest.approx(1 / 90)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(50, 100, 0, "constant") == 1.0
    with pytest.raises(ValueError, match="cosine"):
        lr_factor(50, 100, 0, "exponential")


def test_trains_only_what_requires_grad_and_records_history():
    model = Regression()
    frozen_before = model.frozen.weight.clone()
    evals = iter(range(100))
    history = train(model, data(), collate, steps=40, lr=0.05, batch_size=16, progress=False,
                    evaluate=lambda: {"calls": next(evals)}, eval_every=10, device="cpu")
    assert isinstance(history, History)
    assert history.steps == list(range(1, 41)) and len(history.loss) == 40
    assert history.loss[-1] < history.loss[0]
    assert [e["step"] for e in history.evals] == [10, 20, 30, 40]
    assert history.metric("calls") == ([10, 20, 30, 40], [0, 1, 2, 3])
    assert torch.equal(model.frozen.weight, frozen_before)
    assert history.seconds >= history.eval_seconds >= 0 and not model.training


def test_same_seed_same_run():
    runs = []
    for _ in range(2):
        torch.manual_seed(0)   # same initial weights; the loop's seed fixes the batch order
        runs.append(train(Regression(), data(), collate, steps=10, lr=0.01, progress=False, seed=3,
                          device="cpu").loss)
    assert runs[0] == runs[1]


def test_nothing_to_train_is_a_clear_error():
    model = Regression().requires_grad_(False)
    with pytest.raises(ValueError, match="requires grad"):
        train(model, data(), collate, steps=1, lr=0.1, progress=False, device="cpu")


def test_param_groups_override_learning_rates():
    model = Regression()
    history = train(model, data(), collate, steps=5, lr=0.01, progress=False, device="cpu", warmup=0,
                    schedule="constant", param_groups=[{"params": [model.head.weight], "lr": 0.5},
                                                       {"params": [model.head.bias]}])
    assert history.lr == [0.5] * 5   # the first group's own learning rate


def test_extra_loss_and_step_callback_let_a_method_take_part():
    """extra_loss() joins the backward pass; on_step(step) runs after each optimizer step, while
    the gradients are still there (what AdaLoRA's budget schedule needs), then they are cleared."""
    model, seen = Regression(), []

    def on_step(step):
        seen.append((step, float(model.head.bias.grad)))

    history = train(model, data(), collate, steps=3, lr=0.01, progress=False, device="cpu", max_grad_norm=None,
                    extra_loss=lambda: 1000.0 * model.head.bias.sum(), on_step=on_step)
    assert [s for s, _ in seen] == [1, 2, 3]
    assert all(g > 900 for _, g in seen)   # d(1000 * bias)/d(bias) = 1000, plus the task's small gradient
    assert len(history.extra_loss) == 3 and len(history.loss) == 3   # the task's loss is kept apart
    assert model.head.bias.grad is None   # cleared after the callback
