"""Where each method's trainable parameters sit: one transformer block, drawn with matplotlib.

`draw_block(ax, method)` draws a pre-norm block (norm, attention with q/k/v/o, residual add, norm,
MLP with gate/up/down, residual add: Llama's seven linear layers), frozen parts in grey and what
the method trains in orange.
`draw_methods(methods)` puts several side by side, one panel each. Soft prompts change the sequence,
not a block: `draw_sequence(ax, method)` draws the input tokens and the stack of blocks, with the
virtual tokens (prompt tuning), their encoder (P-tuning) or the per-layer keys and values (prefix
tuning) in orange. `draw_family_map()` is the one-page map of the PEFT families (notebook 00).
"""
import matplotlib.pyplot as plt
from matplotlib.patches import Circle, FancyArrowPatch, Rectangle

FROZEN, TRAINED, TEXT = "#d9d9d9", "#f5a142", "#333333"
QUANTIZED = "#9ecae1"   # frozen and stored in 4 bits (QLoRA)
# name: (x, y, width, height) of the block's boxes; the stream runs upwards at x = 0.
BOXES = {"norm 1": (-0.9, 0.6, 1.8, 0.45), "attention": (-1.3, 1.4, 2.6, 1.5), "norm 2": (-0.9, 4.2, 1.8, 0.45),
         "MLP": (-1.3, 5.0, 2.6, 1.5)}
PROJECTIONS = {"q": (-1.15, 1.55), "k": (-0.55, 1.55), "v": (0.05, 1.55), "o": (0.65, 1.55),
               "gate": (-1.2, 5.15), "up": (-0.375, 5.15), "down": (0.45, 5.15)}
MLP_WIDTH = 0.75   # gate, up and down side by side inside the MLP box (attention's projections are 0.5 wide)
ADDS = (3.75, 7.35)            # heights of the two residual additions
ADAPTER_SLOTS = (3.1, 6.7)     # where a sequential adapter sits: after each block, before its addition
TITLES = {"full": "full fine-tuning", "lora": "LoRA", "ia3": "(IA)³", "houlsby": "Houlsby adapters",
          "pfeiffer": "Pfeiffer adapter", "parallel": "parallel adapter", "bitfit": "BitFit",
          "ln_tuning": "LayerNorm tuning", "qlora": "QLoRA (blue: 4-bit)", "dora": "DoRA", "vera": "VeRA",
          "loha": "LoHa", "lokr": "LoKr", "adalora": "AdaLoRA", "prompt": "prompt tuning", "p_tuning": "P-tuning",
          "prefix": "prefix tuning", "lora_all": "LoRA, every linear layer"}
# What the LoRA family adds beside its target layers (q and v unless LORA_TARGETS says otherwise): its
# update, written as the method builds it.
UPDATES = {"lora": "BA", "lora_all": "BA", "qlora": "BA", "dora": "m · (W + BA) / ‖W + BA‖", "vera": "Λb B Λd A",
           "loha": "(B₁A₁) ⊙ (B₂A₂)", "lokr": "W₁ ⊗ (B₂A₂)", "adalora": "P Λ Q"}
# target_modules="all-linear"; notebook 06 adapts every linear layer with AdaLoRA too.
LORA_TARGETS = {"lora_all": tuple(PROJECTIONS), "adalora": tuple(PROJECTIONS)}


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
        width = MLP_WIDTH if name in ("gate", "up", "down") else 0.5
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
    if method in UPDATES:
        for name in LORA_TARGETS.get(method, ("q", "v")):
            x, y = PROJECTIONS[name]
            width = MLP_WIDTH if name in ("gate", "up", "down") else 0.5
            _box(ax, x, y + 0.58, width, 0.35, "Δ", trained=True, fontsize=7)
        ax.text(0, 3.3 if method in ("lora", "lora_all", "qlora") else 3.35, f"Δ = {UPDATES[method]}", ha="center",
                fontsize=6.5, color=TEXT, bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})
        if method == "vera":
            ax.text(1.4, 1.5, "A, B frozen,\nshared by\nall layers", fontsize=5.5, color=TEXT)
    if method == "ia3":
        for name in ("k", "v"):
            x, y = PROJECTIONS[name]
            _tag(ax, x + 0.25, y + 0.62, "×l")
        x, y = PROJECTIONS["down"]
        _tag(ax, x + 0.12, y + 0.25, "×l")   # on down's input
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


SEQUENCE_METHODS = ("prompt", "p_tuning", "prefix")


def draw_sequence(ax, method: str, layers: int = 3, tokens: int = 4, virtual: int = 2) -> None:
    """The input tokens and a stack of `layers` blocks; where a soft-prompt method puts its
    trainable numbers: P vectors before the input (prompt tuning), the same made by an encoder from
    a table (P-tuning), or P keys and values inside every layer's attention (prefix tuning)."""
    if method not in SEQUENCE_METHODS:
        raise ValueError(f"draw_sequence draws {SEQUENCE_METHODS}; layer methods are drawn by draw_block")
    lead = virtual if method in ("prompt", "p_tuning") else 0
    columns = lead + tokens
    for layer in range(layers):
        y = 1.2 + 1.3 * layer
        _box(ax, -0.1, y, columns + 0.2 + (virtual if method == "prefix" else 0), 0.9, "", fontsize=7)
        ax.text(-0.3, y + 0.45, f"layer {layer + 1}", ha="right", va="center", fontsize=7, color=TEXT)
        if method == "prefix":
            for i in range(virtual):
                _box(ax, columns + 0.15 + i, y + 0.15, 0.75, 0.6, "k,v", trained=True, fontsize=6)
    for i in range(columns):
        is_virtual = i < lead
        _box(ax, i + 0.1, 0.2, 0.8, 0.6, f"p{i + 1}" if is_virtual else f"x{i - lead + 1}", trained=is_virtual,
             fontsize=7)
        _arrow(ax, (i + 0.5, 0.8), (i + 0.5, 1.2))
    if method == "p_tuning":
        _box(ax, 0.1, -1.0, 2 * virtual - 0.2 if virtual > 1 else 0.8, 0.6, "encoder (MLP / LSTM)", trained=True,
             fontsize=6)
        _arrow(ax, (virtual / 2, -0.4), (virtual / 2, 0.2), color=TRAINED)
    if method == "prefix":
        ax.text(columns + 0.15, 0.5, "P keys and values\nin every layer", va="center", fontsize=6, color=TEXT)
    ax.text(columns / 2, 1.2 + 1.3 * layers + 0.1, "to the LM head", ha="center", fontsize=7, color="#777777")
    ax.set_xlim(-1.4, columns + (virtual if method == "prefix" else 0) + 0.4)
    ax.set_ylim(-1.2 if method == "p_tuning" else 0, 1.2 + 1.3 * layers + 1.0)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(TITLES[method], fontsize=10)


def draw_methods(methods: list[str], title: str | None = None):
    """Several panels side by side, one method each (blocks or sequences); returns the figure."""
    fig, axes = plt.subplots(1, len(methods), figsize=(2.4 * len(methods), 4.4))
    for ax, method in zip(axes if len(methods) > 1 else [axes], methods):
        (draw_sequence if method in SEQUENCE_METHODS else draw_block)(ax, method)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


# The PEFT families (after Lialin et al. 2023, *Scaling Down to Scale Up*, arXiv:2303.15647), with the
# notebooks that build each method.
FAMILIES = {
    "add parameters: adapters": ["Houlsby, Pfeiffer, parallel adapters (07)"],
    "add parameters: soft prompts": ["prompt tuning (08)", "P-tuning (09)", "prefix tuning, P-tuning v2 (10)"],
    "select parameters": ["BitFit (07)", "LayerNorm tuning (07)"],
    "reparameterise the update": ["LoRA (02-04)", "rsLoRA, LoRA+, PiSSA (04)", "DoRA, VeRA, LoHa, LoKr (05)",
                                  "AdaLoRA (06)", "rotations OFT, HRA; FourierFT (17)"],
    "rescale activations": ["(IA)³ (07)"],
    "save memory around them": ["QLoRA: a 4-bit base (11)", "many adapters on one base (13)"],
}


def draw_family_map():
    """One page: the PEFT families, their methods and notebooks, and the baseline; returns the figure."""
    fig, ax = plt.subplots(figsize=(11, 5.2))
    ax.axis("off")
    ax.set_xlim(0, 3)
    ax.set_ylim(0, 2.45)
    _box(ax, 1.0, 2.1, 1.0, 0.28, "full fine-tuning (01): train every weight", fontsize=9, color=FROZEN)
    for i, (family, methods) in enumerate(FAMILIES.items()):
        x, y = (i % 3), 1.0 - (i // 3) * 0.95
        ax.add_patch(Rectangle((x + 0.04, y + 0.02), 0.92, 0.86, facecolor="#fff3e4", edgecolor="#c77c2e", lw=0.8))
        ax.text(x + 0.5, y + 0.78, family, ha="center", va="center", fontsize=9.5, fontweight="bold", color=TEXT)
        ax.text(x + 0.5, y + 0.38, "\n".join(methods), ha="center", va="center", fontsize=8.5, color=TEXT,
                linespacing=1.5)
    ax.text(1.5, 2.0, "PEFT freezes the pretrained weights and trains something small instead:", ha="center",
            va="top", fontsize=9, color="#555555")
    ax.set_title("The PEFT families in this workbook (the unified view of all of them: notebook 12)", fontsize=11)
    fig.tight_layout()
    return fig
