"""Pretrain the bundled vision model on the digits 0-4: `python -m peftlab.workbook.pretrain_vision`.

A ViTForImageClassification built from its config (peftlab/workbook/vision.py) learns to tell the digits
0-4 apart (cross-entropy, the same training loop the notebooks use). It never sees a 5, 6, 7, 8
or 9: those are the transfer task of notebook 15. At the end the script measures what the model
card reports on the weights as saved, writes the card, and refreshes the data manifest.
"""
import argparse
import json
import time

import torch
from transformers import ViTForImageClassification

from peftlab.workbook.data.images import IMAGE_TASKS, load_images
from peftlab.workbook.data.manifest import write_manifest
from peftlab.workbook.runtime import seed_everything
from peftlab.workbook.training import train
from peftlab.workbook.vision import (
    MODELS_DIR,
    VISION_ARCHITECTURES,
    VISION_MODEL,
    collate_images,
    image_accuracy,
    load_vision_model,
    vit_config,
)

TASK = "digits_0_4"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default=VISION_MODEL)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)   # this small model gains nothing from more
    parser.add_argument("--save-dtype", choices=["float32", "float16", "bfloat16"], default="float16",
                        help="dtype of the saved weights (float16: half the bytes; the card is measured on them)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    data = load_images(TASK)
    labels = [str(d) for d in IMAGE_TASKS[TASK]]
    model = ViTForImageClassification(vit_config(args.name, labels))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{args.name}: {n_params:,} parameters, {len(data['train'])} training images of the digits {labels}")
    started = time.strftime("%Y-%m-%d")
    history = train(model, data["train"], collate_images, steps=args.steps, lr=args.lr, batch_size=args.batch_size,
                    warmup=0.05, schedule="cosine", weight_decay=args.weight_decay, seed=args.seed, device="cpu",
                    desc="pretraining")

    out = MODELS_DIR / args.name
    model.to(getattr(torch, args.save_dtype)).save_pretrained(out)
    saved = load_vision_model(args.name)                 # measure exactly what loads from disk
    figures = {split: round(image_accuracy(saved, data[split]), 4) for split in ("validation", "test")}
    print(json.dumps(figures))
    facts = {"name": args.name, "architecture": VISION_ARCHITECTURES[args.name], "parameters": n_params,
             "task": TASK, "labels": labels, "train_images": len(data["train"]), "steps": args.steps,
             "batch_size": args.batch_size, "epochs": round(args.steps * args.batch_size / len(data["train"]), 1),
             "lr": args.lr, "weight_decay": args.weight_decay, "seed": args.seed, "threads": args.threads,
             "saved_dtype": args.save_dtype, "weights_bytes": (out / "model.safetensors").stat().st_size,
             "train_seconds": round(history.seconds), "final_train_loss": round(history.loss[-1], 4),
             "validation_accuracy": figures["validation"], "test_accuracy": figures["test"],
             "test_images": len(data["test"]), "date": started, "torch": torch.__version__}
    (out / "training.json").write_text(json.dumps(facts, indent=2) + "\n")
    (out / "README.md").write_text(model_card(facts))
    write_manifest()
    print(f"saved to {out}")


def model_card(f: dict) -> str:
    a = f["architecture"]
    side = a["image_size"] // a["patch_size"]
    rows = [
        ("architecture", f"`ViTForImageClassification`: {a['image_size']} x {a['image_size']} x {a['num_channels']} "
                         f"images, {a['patch_size']} x {a['patch_size']} patches ({side * side} patches + [CLS]), "
                         f"width {a['hidden_size']}, {a['num_hidden_layers']} layers, {a['num_attention_heads']} "
                         f"heads, MLP {a['intermediate_size']}; a linear head on [CLS]"),
        ("parameters", f"{f['parameters']:,}"),
        ("classes", f"{', '.join(f['labels'])} (`id2label` in `config.json`)"),
        ("data", f"{f['train_images']} training images (`load_images(\"{f['task']}\")[\"train\"]`); "
                 "pixels 0..16 read as [-1, 1]"),
        ("training", f"{f['steps']} steps x {f['batch_size']} images (about {f['epochs']} epochs); AdamW, "
                     f"lr {f['lr']}, weight decay {f['weight_decay']}, cosine, seed {f['seed']}"),
        ("weights", f"stored as {f['saved_dtype']} ({f['weights_bytes']:,} bytes); "
                    "`from_pretrained(..., dtype=torch.float32)` gives exactly these values in float32"),
        ("time", f"{f['train_seconds']} s on {f['threads']} CPU thread{'s' * (f['threads'] > 1)} "
                 f"(torch {f['torch']}, {f['date']})"),
        ("final training loss", f"{f['final_train_loss']}"),
        ("accuracy, digits 0-4", f"validation {f['validation_accuracy']:.1%}, test {f['test_accuracy']:.1%} "
                                 f"({f['test_images']} test images; chance is 20%)"),
    ]
    table = "\n".join(f"| {key} | {value} |" for key, value in rows)
    return f"""# {f['name']}

A tiny vision transformer, pretrained from scratch by `python -m peftlab.workbook.pretrain_vision` on the
handwritten digits 0-4 that ship inside scikit-learn (`sklearn.datasets.load_digits`, 8 x 8 grey-scale
images; split by `peftlab.workbook.data.images`). It has never seen the digits 5-9: adapting it to them is
the transfer task of notebook 15 (PEFT for images).

| | |
|---|---|
{table}

All figures come from `training.json`, written by the same run and measured on the weights as
saved. Load it with `ViTForImageClassification.from_pretrained("{f['name']}'s folder")` or
`peftlab.workbook.vision.load_vision_model()`. Re-running the script gives a model of the same quality;
bit-identical weights need the same torch version and thread count.
"""


if __name__ == "__main__":
    main()
