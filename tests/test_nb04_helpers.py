"""Helpers added for 04_inside_lora: its plots, its explorer widget and its exercise checkers."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from peftlab.course.exercises import nb04_inside_lora as nb04  # noqa: E402
from peftlab.course.viz import plot_loss_curves, plot_rank_sweep, plot_spectra, plot_subspace_similarity  # noqa: E402
from peftlab.course.widgets import lora_rank_explorer, lora_scales  # noqa: E402
from peftlab.workbook.training import History  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def stub(*_):
    raise NotImplementedError


# --- plots ------------------------------------------------------------------------------------

def test_plot_rank_sweep_draws_each_series_the_baseline_and_the_cost_axis():
    ax = plot_rank_sweep([1, 4, 64], {"LoRA": [0.8, 0.9, 0.95]}, params=[10, 40, 640], baseline=0.5,
                         title="sweep")
    x, y = ax.lines[0].get_data()
    assert list(x) == [1, 4, 64] and list(y) == [0.8, 0.9, 0.95]
    assert ax.lines[1].get_ydata()[0] == 0.5                      # the dashed baseline
    assert ax.get_xscale() == "log" and ax.get_title() == "sweep"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["LoRA", "base model, no adapter",
                                                                    "trainable parameters"]
    twin = [a for a in ax.figure.axes if a is not ax][0]
    assert list(twin.lines[0].get_ydata()) == [10, 40, 640] and twin.get_ylabel() == "trainable parameters"


def test_plot_spectra_normalizes_to_the_largest_value_unless_told_not_to():
    ax = plot_spectra({"a": np.array([4.0, 2.0, 1.0])})
    assert list(ax.lines[0].get_ydata()) == [1.0, 0.5, 0.25]
    assert list(ax.lines[0].get_xdata()) == [1, 2, 3]
    raw = plot_spectra({"a": torch.tensor([4.0, 2.0])}, normalize=False)
    assert list(raw.lines[0].get_ydata()) == [4.0, 2.0] and raw.get_ylabel() == "σ_i"
    assert ax.get_legend().get_texts()[0].get_text() == "a"


def test_plot_subspace_similarity_puts_phi_i_j_at_row_i_column_j():
    phi = np.array([[0.9, 0.8, 0.7], [0.1, 0.2, 0.3]])   # i = 1..2, j = 1..3
    ax = plot_subspace_similarity(phi, xlabel="j", ylabel="i")
    image = ax.images[0]
    assert np.array_equal(image.get_array(), phi)
    assert image.get_extent() == [0.5, 3.5, 2.5, 0.5]    # row i=1 on top, column j=1 on the left
    assert image.get_clim() == (0.0, 1.0)
    assert len(ax.figure.axes) == 2                       # the colorbar


def test_plot_loss_curves_one_labelled_smoothed_line_per_run():
    a, b = History(steps=[1, 2, 3], loss=[3.0, 1.0, 2.0]), History(steps=[1, 2], loss=[5.0, 5.0])
    ax = plot_loss_curves({"a": a, "b": b}, window=2, styles={"b": "--"})
    assert list(ax.lines[0].get_ydata()) == [3.0, 2.0, 1.5]
    assert ax.lines[1].get_linestyle() == "--"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]


# --- explorer ---------------------------------------------------------------------------------

def test_lora_scales():
    assert lora_scales(16, 32) == {"alpha/r": 2.0, "alpha/sqrt(r)": 8.0}


def test_explorer_reports_the_chosen_rank_and_alpha_and_follows_the_sliders(capsys):
    spectra = {1: torch.tensor([1.0]), 4: torch.tensor([3.0, 1.0, 0.5, 0.1]), 64: torch.ones(64)}
    box = lora_rank_explorer(spectra, accuracies={4: 0.9}, params={4: 7168}, lora_alpha=16)
    first = capsys.readouterr().out
    assert "r = 4, lora_alpha = 16: s = alpha/r = 4.000, rsLoRA s = alpha/sqrt(r) = 8.000" in first
    assert "7,168 trainable parameters" in first and "accuracy 0.900" in first
    rank, alpha = box.children[0].children
    rank.value = 64
    alpha.value = 8
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == "r = 64, lora_alpha = 8: s = alpha/r = 0.125, rsLoRA s = alpha/sqrt(r) = 1.000"
    assert "90% of energy in 58 direction(s)" in plt.gcf().axes[1].get_title()   # 0.9 * 64 = 57.6


# --- checkers ---------------------------------------------------------------------------------

def test_check_scales(capsys):
    assert not nb04.check_scales(None, None)
    assert "not attempted" in capsys.readouterr().out
    assert nb04.check_scales(2.0, 8.0)
    assert not nb04.check_scales(8.0, 2.0)
    assert "swapped" in capsys.readouterr().out.splitlines()[-1]
    assert not nb04.check_scales(2.0, 32 / 16 ** 2)
    last = capsys.readouterr().out.splitlines()[-1]
    assert "rsLoRA: 0.125 is not lora_alpha / sqrt(r)" in last and "plain LoRA" not in last
    assert not nb04.check_scales("two", 8.0)
    assert "two numbers" in capsys.readouterr().out


def reference_rank_for_energy(values, fraction):
    energy = values.sort(descending=True).values ** 2
    return int((energy.cumsum(0) / energy.sum() < fraction).sum()) + 1


def test_check_rank_for_energy(capsys):
    assert not nb04.check_rank_for_energy(stub)
    assert "not attempted" in capsys.readouterr().out
    assert nb04.check_rank_for_energy(reference_rank_for_energy)

    def unsquared(values, fraction):
        values = values.sort(descending=True).values
        return int((values.cumsum(0) / values.sum() < fraction).sum()) + 1

    def unsorted(values, fraction):
        energy = values ** 2
        return int((energy.cumsum(0) / energy.sum() < fraction).sum()) + 1

    def strict(values, fraction):
        energy = values.sort(descending=True).values ** 2
        return int((energy.cumsum(0) / energy.sum() <= fraction).sum()) + 1

    def off_by_one(values, fraction):
        return reference_rank_for_energy(values, fraction) - 1

    for wrong, hint in [(unsquared, "squared"), (unsorted, "Sort"), (strict, ">="), (off_by_one, "Off by one")]:
        assert not nb04.check_rank_for_energy(wrong)
        assert hint in capsys.readouterr().out.splitlines()[-1], wrong.__name__


def reference_pissa(W, r, scaling):
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    root = (S[:r] / scaling).sqrt()
    B, A = U[:, :r] * root, root[:, None] * Vh[:r]
    return A, B, W - scaling * B @ A


def test_check_pissa_factors(capsys):
    assert not nb04.check_pissa_factors(stub)
    assert "not attempted" in capsys.readouterr().out
    assert nb04.check_pissa_factors(reference_pissa)

    def unscaled(W, r, scaling):        # forgot to divide by the scaling
        A, B, _ = reference_pissa(W, r, 1.0)
        return A, B, W - scaling * B @ A

    def minor(W, r, scaling):           # the smallest singular triples instead of the largest
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
        root = (S[-r:] / scaling).sqrt()
        B, A = U[:, -r:] * root, root[:, None] * Vh[-r:]
        return A, B, W - scaling * B @ A

    def no_residual(W, r, scaling):     # keeps W as the frozen weight: the output changes at init
        A, B, _ = reference_pissa(W, r, scaling)
        return A, B, W

    def transposed(W, r, scaling):
        A, B, residual = reference_pissa(W, r, scaling)
        return A.T, B.T, residual

    for wrong, hint in [(unscaled, "divide S_r by the scaling"), (minor, "minor"),
                        (no_residual, "residual + scaling"), (transposed, "shapes")]:
        assert not nb04.check_pissa_factors(wrong)
        assert hint in capsys.readouterr().out.splitlines()[-1], wrong.__name__

    def lopsided(W, r, scaling):        # right product, but all of S_r / scaling in B
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
        B, A = U[:, :r] * (S[:r] / scaling), Vh[:r]
        return A, B, W - scaling * B @ A

    assert nb04.check_pissa_factors(lopsided)
    assert "splits the root" in capsys.readouterr().out
