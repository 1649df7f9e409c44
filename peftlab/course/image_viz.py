"""What notebook 15 draws: digit images, attention maps over patches, and an explorer of predictions."""
import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from IPython.display import display

from peftlab.workbook.vision import pixel_values


def show_digits(rows, title: str, per_row: int = 10, ax_size: float = 0.8):
    """A grid of 8 x 8 images with their digit above each."""
    rows = list(rows)
    n_rows = (len(rows) + per_row - 1) // per_row
    fig, axes = plt.subplots(n_rows, per_row, figsize=(per_row * ax_size, n_rows * (ax_size + 0.25) + 0.4),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, rows):
        ax.imshow(row["pixels"], cmap="gray_r", vmin=0, vmax=16)
        ax.set_title(str(row["digit"]), fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_attention_maps(maps: dict[str, torch.Tensor], title: str):
    """One row per model, one column per layer: how much [CLS] attends to each of the 4 x 4 patches."""
    names = list(maps)
    layers = len(maps[names[0]])
    top = max(float(m.max()) for m in maps.values())
    fig, axes = plt.subplots(len(names), layers, figsize=(1.7 * layers + 1, 1.7 * len(names) + 0.5), squeeze=False)
    for i, name in enumerate(names):
        for j in range(layers):
            image = axes[i, j].imshow(maps[name][j], cmap="viridis", vmin=0, vmax=top)
            axes[i, j].set_xticks([]), axes[i, j].set_yticks([])
            if i == 0:
                axes[i, j].set_title(f"layer {j}", fontsize=9)
        axes[i, 0].set_ylabel(name, fontsize=9)
    fig.colorbar(image, ax=axes, shrink=0.8, label="attention from [CLS]")
    fig.suptitle(title, fontsize=10)
    return fig


@torch.no_grad()
def probabilities(model, row) -> torch.Tensor:
    model.eval()
    return model(pixel_values=pixel_values([row])).logits.softmax(-1)[0]


def prediction_explorer(models: dict, rows, labels: list[str], base=None, base_labels: list[str] | None = None):
    """A slider over test images: the image, and each model's probability for every new label (and,
    with `base`, what the pretrained model calls the image among its own labels)."""
    rows = list(rows)
    index = widgets.IntSlider(value=0, min=0, max=len(rows) - 1, description="test image", continuous_update=False)
    output = widgets.Output()

    def update(_=None):
        row = rows[index.value]
        with output:
            output.clear_output(wait=True)
            panels = len(models) + 1 + (base is not None)
            fig, axes = plt.subplots(1, panels, figsize=(2.2 * panels, 2.2))
            axes[0].imshow(row["pixels"], cmap="gray_r", vmin=0, vmax=16)
            axes[0].set_title(f"a {row['digit']}"), axes[0].axis("off")
            shown = list(models.items()) + ([("pretrained (0-4)", base)] if base is not None else [])
            for ax, (name, model) in zip(axes[1:], shown):
                p = probabilities(model, row)
                names = base_labels if model is base else labels
                colors = ["tab:green" if k == int(p.argmax()) else "tab:gray" for k in range(len(p))]
                ax.bar(names, p.numpy(), color=colors)
                ax.set_ylim(0, 1), ax.set_title(name, fontsize=9), ax.set_xlabel("digit")
            axes[1].set_ylabel("probability")
            fig.tight_layout()
            plt.show()

    index.observe(update, names="value")
    update()
    box = widgets.VBox([index, output])
    display(box)
    return box
