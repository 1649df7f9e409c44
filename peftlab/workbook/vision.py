"""The bundled vision model and what the image notebook measures with it.

`pico-vit-digits` is a `transformers` ViTForImageClassification (Dosovitskiy et al. 2020,
arXiv:2010.11929) for 8 x 8 grey-scale images: 2 x 2 patches (a Conv2d with stride 2 cuts the
image into 16 patches and embeds each), a [CLS] token, 4 transformer layers, and a linear head
on the [CLS] token's final state. `python -m peftlab.workbook.pretrain_vision` trains it on the digits
0-4 (peftlab/workbook/data/images.py); the digits 5-9 are the transfer task it never saw.

Pixels are counts 0..16; the model reads them scaled to [-1, 1] (`pixel_values`).
"""
import torch
from transformers import ViTConfig, ViTForImageClassification

from peftlab.workbook.data import DATA_DIR
from peftlab.workbook.data.images import PIXEL_MAX

MODELS_DIR = DATA_DIR / "models"
VISION_MODEL = "pico-vit-digits"
VISION_ARCHITECTURES = {
    "pico-vit-digits": dict(image_size=8, patch_size=2, num_channels=1, hidden_size=64, num_hidden_layers=4,
                            num_attention_heads=4, intermediate_size=128),
}


def vit_config(name: str, labels: list[str]) -> ViTConfig:
    if name not in VISION_ARCHITECTURES:
        raise ValueError(f"Unknown vision architecture {name!r}. Known: {', '.join(VISION_ARCHITECTURES)}.")
    return ViTConfig(**VISION_ARCHITECTURES[name], num_labels=len(labels),
                     id2label=dict(enumerate(labels)), label2id={k: i for i, k in enumerate(labels)})


def load_vision_model(name: str = VISION_MODEL) -> ViTForImageClassification:
    """A bundled vision model in float32, eval mode, with attention maps available (eager attention)."""
    path = MODELS_DIR / name
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"No bundled vision model {name!r} in {MODELS_DIR}; "
                                f"recreate it with `python -m peftlab.workbook.pretrain_vision --name {name}`.")
    model = ViTForImageClassification.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    return model.eval()


def pixel_values(rows) -> torch.Tensor:
    """Rows with 8 x 8 "pixels" (0..16) -> (N, 1, 8, 8) floats in [-1, 1]."""
    pixels = torch.tensor([row["pixels"] for row in rows], dtype=torch.float32)
    return (pixels / PIXEL_MAX * 2 - 1).unsqueeze(1)


def collate_images(rows) -> dict[str, torch.Tensor]:
    """A batch for `train`: pixel_values and labels (the model computes the cross-entropy)."""
    return {"pixel_values": pixel_values(rows), "labels": torch.tensor([row["label"] for row in rows])}


@torch.no_grad()
def predict(model, rows, batch_size: int = 512) -> torch.Tensor:
    """The predicted label of every row, (N,)."""
    model.eval()
    out = [model(pixel_values=pixel_values(rows[i:i + batch_size])).logits.argmax(-1)
           for i in range(0, len(rows), batch_size)]
    return torch.cat(out)


def image_accuracy(model, rows) -> float:
    rows = list(rows)
    labels = torch.tensor([row["label"] for row in rows])
    return (predict(model, rows) == labels).float().mean().item()


def vit_of(model):
    """The ViTModel inside a ViTForImageClassification, wrapped in a PeftModel or not."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.vit


@torch.no_grad()
def cls_features(model, rows) -> torch.Tensor:
    """The [CLS] token's final state, what the head reads, (N, hidden): with a PeftModel's active
    adapters (not its head)."""
    model.eval()
    return vit_of(model)(pixel_values=pixel_values(list(rows))).last_hidden_state[:, 0]


def head_accuracy(model, head: torch.nn.Module, rows) -> float:
    """Accuracy of `head` on `model`'s features: an old head on an adapted backbone measures forgetting."""
    rows = list(rows)
    labels = torch.tensor([row["label"] for row in rows])
    with torch.no_grad():
        return (head(cls_features(model, rows)).argmax(-1) == labels).float().mean().item()


@torch.no_grad()
def attention_from_cls(model, rows) -> torch.Tensor:
    """How much the [CLS] token attends to each patch, per layer, averaged over heads and images:
    (layers, 8 / patch, 8 / patch). The model must use eager attention (load_vision_model does)."""
    model.eval()
    out = vit_of(model)(pixel_values=pixel_values(list(rows)), output_attentions=True)
    maps = torch.stack([a[:, :, 0, 1:].mean(dim=(0, 1)) for a in out.attentions])    # (layers, patches)
    side = int(maps.shape[1] ** 0.5)
    return maps.view(len(maps), side, side)
