"""Where each method's trainable parameters sit: one transformer block, drawn with matplotlib.

`draw_block(ax, method)` draws a pre-norm block (norm, attention with q/k/v/o, residual add, norm,
MLP with up/down, residual add), frozen parts in grey and what the method trains in orange.
`draw_methods(methods)` puts several side by side, one panel each.
"""
import matplotlib.pyplot as plt
from matplotlib.patches import Circle, FancyArrowPatch, Rectangle

FROZEN, TRAINED, TEXT = "#d9d9d9", "#f5a142", "#333333"
QUANTIZED = "#9ecae1"   # frozen and stored in 4 bits (QLoRA)
# name: (x, y, width, height) of the block's boxes; the stream runs upwards at x = 0.
BOXES = {"norm 1": (-0.9, 0.6, 1.8, 0.45), "attention": (-1.3, 1.4, 2.6, 1.5), "norm 2": (-0.9, 4.2, 1.8, 0.45),
         "MLP": (-1.3, 5.0, 2.6, 1.5)}
PROJECTIONS = {"q": (-1.15, 1.55), "k": (-0.55, 1.55), "v": (0.05, 1.55), "o": (0.65, 1.55),
               "up": (-1.0, 5.15), "down": (0.3, 5.15)}
ADDS = (3.75, 7.35)            # heights of the two residual additions
ADAPTER_SLOTS = (3.1, 6.7)     # where a sequential adapter sits: after each block, before its addition
TITLES = {"full": "full fine-tuning", "lora": "LoRA", "ia3": "(IA)³", "houlsby": "Houlsby adapters",
          "pfeiffer": "Pfeiffer adapter", "parallel": "parallel adapter", "bitfit": "BitFit",
          "ln_tuning": "LayerNorm tuning", "qlora": "QLoRA (blue: 4-bit)"}


def _box(ax, x, y, w, h, label, trained=False, fontsize=8, color=None):
    color = color or (TRAINED if trained else FROZEN)
    ax.add_patch(Rectangle((x, y), w, h, facecolor=color, edgecolor="#555555", lw=0.8))
    ax.text(x + w / 2, y + h / 2, label, ha="center", va="center", fontsize=fontsize, color=TEXT)


def _arrow(ax, start, end, color="#555555"):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=8, color=color, lw=0.8))


def _tag(ax, x, y, label):
    ax.text(x, y, label, ha="center", va="center", fontsize=7, color="white", fontweight="bold",
            bbox={"boxstyle": "round,pad=0.15", "facecolor": TRAINED, "edgecolor": "none"})


def draw_block(ax, method: str) -> None:
    """One block, with `method`'s trainable parameters in orange (see TITLES for the names)."""
    full = method == "full"
    for name, (x, y, w, h) in BOXES.items():
        trained = full or (method == "ln_tuning" and name.startswith("norm"))
        _box(ax, x, y, w, h, "" if name in ("attention", "MLP") else name, trained)
        if name in ("attention", "MLP"):
            ax.text(x + w / 2, y + h - 0.2, name, ha="center", va="center", fontsize=8, color=TEXT)
    for name, (x, y) in PROJECTIONS.items():
        width = 1.0 if name in ("up", "down") else 0.5
        _box(ax, x, y, width, 0.5, name, trained=full, fontsize=7, color=QUANTIZED if method == "qlora" else None)
        if method == "bitfit":
            _tag(ax, x + width - 0.05, y + 0.5, "+b")
    if method == "bitfit":
        for name in ("norm 1", "norm 2"):
            x, y, w, h = BOXES[name]
            _tag(ax, x + w - 0.05, y + h, "+β")
    adapters = {"houlsby": (True, True), "pfeiffer": (False, True)}.get(method, (False, False))
    for y in ADDS:
        ax.add_patch(Circle((0, y), 0.18, facecolor="white", edgecolor="#555555", lw=0.8))
        ax.text(0, y, "+", ha="center", va="center", fontsize=9)
    segments = [(0.3, 0.6), (1.05, 1.4), (3.93, 4.2), (4.65, 5.0), (7.53, 7.8)]
    for block, slot, add, wanted in zip(("attention", "MLP"), ADAPTER_SLOTS, ADDS, adapters):
        top = BOXES[block][1] + BOXES[block][3]
        if wanted:   # block -> adapter -> addition
            _box(ax, -0.5, slot, 1.0, 0.3, "adapter", trained=True, fontsize=7)
            segments += [(top, slot), (slot + 0.3, add - 0.18)]
        else:
            segments.append((top, add - 0.18))
    for start, end in segments:
        _arrow(ax, (0, start), (0, end))
    for y0, y1 in [(0.45, ADDS[0]), (3.98, ADDS[1])]:   # residual connections on the left
        ax.plot([-1.6, -1.6], [y0, y1], color="#888888", lw=0.8)
        ax.plot([-1.6, -0.18], [y1, y1], color="#888888", lw=0.8)
        ax.plot([-1.6, 0], [y0, y0], color="#888888", lw=0.8)
    if method in ("lora", "qlora"):
        for name in ("q", "v"):
            x, y = PROJECTIONS[name]
            _box(ax, x, y + 0.58, 0.5, 0.35, "BA", trained=True, fontsize=7)
    if method == "ia3":
        for name in ("k", "v"):
            x, y = PROJECTIONS[name]
            _tag(ax, x + 0.25, y + 0.62, "×l")
        x, y = PROJECTIONS["down"]
        _tag(ax, x - 0.15, y + 0.25, "×l")
    if method == "parallel":   # beside the MLP: reads its input, adds to its output
        _box(ax, 1.55, 5.5, 0.85, 0.5, "adapter", trained=True, fontsize=7)
        _arrow(ax, (0.9, 4.8), (1.95, 5.5), color=TRAINED)
        _arrow(ax, (1.95, 6.0), (0.17, ADDS[1] - 0.08), color=TRAINED)
    ax.text(0, 7.95, "to the next block", ha="center", fontsize=7, color="#777777")
    ax.text(0, 0.15, "hidden states", ha="center", fontsize=7, color="#777777")
    ax.set_xlim(-1.9, 2.5)
    ax.set_ylim(0, 8.2)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(TITLES.get(method, method), fontsize=10)


def draw_methods(methods: list[str], title: str | None = None):
    """Several blocks side by side, one method each; returns the figure."""
    fig, axes = plt.subplots(1, len(methods), figsize=(2.1 * len(methods), 4.4))
    for ax, method in zip(axes if len(methods) > 1 else [axes], methods):
        draw_block(ax, method)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
