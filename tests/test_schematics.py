"""Schematics (peftlab/course/schematics.py): every method draws, and what it trains is drawn in orange."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from peftlab.course import schematics  # noqa: E402


def trained_patches(ax):
    return [p for p in ax.patches if to_hex(p.get_facecolor()) == schematics.TRAINED]


@pytest.mark.parametrize("method", list(schematics.TITLES))
def test_every_method_draws_its_trainable_parameters(method):
    fig = schematics.draw_methods([method, "full"])
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.texts]
    assert ax.get_title() == schematics.TITLES[method]
    if method == "ln_tuning" or method not in ("ia3", "bitfit"):
        assert trained_patches(ax), f"{method}: nothing drawn as trained"
    else:   # (IA)³ and BitFit are tags (×l, +b) on frozen layers
        assert any(label in ("×l", "+b") for label in labels)
    if method in schematics.UPDATES:
        targets = schematics.LORA_TARGETS.get(method, ("q", "v"))
        assert labels.count("Δ") == len(targets) and f"Δ = {schematics.UPDATES[method]}" in labels, (
            "the update beside each target layer")
    plt.close(fig)


def test_frozen_parts_are_not_orange_in_lora_and_everything_is_in_full_fine_tuning():
    fig = schematics.draw_methods(["lora", "full"])
    lora, full = fig.axes
    assert len(trained_patches(lora)) == 2
    assert len(trained_patches(full)) > len(trained_patches(lora))
    plt.close(fig)


def test_all_linear_lora_trains_beside_every_projection():
    fig = schematics.draw_methods(["lora", "lora_all"])
    qv, every = fig.axes
    assert len(trained_patches(qv)) == 2 and len(trained_patches(every)) == len(schematics.PROJECTIONS) == 7
    plt.close(fig)


def test_sequence_methods_only():
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="draw_block"):
        schematics.draw_sequence(ax, "lora")
    schematics.draw_sequence(ax, "prefix", layers=3, virtual=2)
    assert len(trained_patches(ax)) == 3 * 2, "P keys/values in every layer"
    plt.close(fig)


def test_family_map_names_every_notebook_that_builds_a_method():
    fig = schematics.draw_family_map()
    text = " ".join([t.get_text() for t in fig.axes[0].texts] + [fig.axes[0].get_title()])
    for notebook in ("01", "02", "04", "05", "06", "07", "08", "09", "10", "11", "12", "13", "17"):
        assert f"({notebook}" in text or f"{notebook})" in text or f"notebook {notebook}" in text, notebook
    plt.close(fig)


def test_the_block_draws_llamas_seven_linear_layers_each_inside_its_box():
    """q, k, v, o inside attention; gate, up, down inside the MLP, as drawn: no box overflows its container."""
    from matplotlib.patches import Rectangle
    fig = schematics.draw_methods(["full"])
    drawn = [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]
    for block, y in (("attention", schematics.PROJECTIONS["q"][1]), ("MLP", schematics.PROJECTIONS["gate"][1])):
        bx, _, bw, _ = schematics.BOXES[block]
        inside = [p for p in drawn if p.get_y() == y]
        assert len(inside) == (4 if block == "attention" else 3), block
        assert all(bx <= p.get_x() and p.get_x() + p.get_width() <= bx + bw for p in inside), f"a box overflows {block}"
    plt.close(fig)
