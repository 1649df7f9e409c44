"""The conformance table: every method peftlab implements, one row each, and the architectures
it runs on. test_conformance.py runs every invariant that applies to a row, so adding a method
to the library means adding a row here (and nothing else in the tests, unless the method has
behaviour of its own to check).

A row's `config(lib, arch)` builds the same config with peftlab or with peft (`lib` is either
module), so the oracle tests compare the two libraries on identical settings.
"""
from collections.abc import Callable
from dataclasses import dataclass

from soft_prompt_testutils import METHODS as PROMPT_METHODS

from peftlab.nf4 import quantize_model

LAYER_ARCHS = ("gpt2", "llama", "neox", "opt", "bert", "mlp", "vit")
LORA_ARCHS = (*LAYER_ARCHS, "cnn")   # LoRA and DoRA also wrap convolutions (nn.Conv1d/2d/3d), as in peft
PROMPT_ARCHS = ("gpt2", "llama", "opt")
QLORA_ARCHS = ("gpt2", "llama", "neox", "opt", "mlp")   # BERT's and ViT's classifiers would be quantized, then trained
LYCORIS_ARCHS = ("llama", "neox", "opt", "bert", "mlp", "vit")    # peft's LoHa and LoKr: nn.Linear, not Conv1D

# Targets that cover each architecture's layer types: GPT-2's Conv1D and an untied embedding,
# Llama's embed_tokens (peft then saves the whole embedding matrix too), BERT and ViT with a new head,
# ViT's patch embedding (a Conv2d), the conv net's padded, strided and dilated convolutions.
LORA_TARGETS = {"gpt2": ["c_attn", "c_fc", "wpe"], "llama": ["q_proj", "v_proj", "down_proj", "embed_tokens"],
                "neox": ["query_key_value", "dense_4h_to_h", "embed_in"],
                "opt": ["q_proj", "v_proj", "fc1"], "bert": ["query", "value", "word_embeddings"],
                "mlp": ["fc1", "fc2"], "vit": ["q_proj", "v_proj", "fc2", "projection"],
                "cnn": ["conv1", "conv2", "conv3", "fc"]}
NOT_LINEAR = ("wpe", "embed_tokens", "word_embeddings", "embed_in", "projection", "conv1", "conv2", "conv3")
LINEAR_TARGETS = {arch: [t for t in ts if t not in NOT_LINEAR] for arch, ts in LORA_TARGETS.items()}
IA3_TARGETS = {"gpt2": (["c_attn", "mlp.c_proj"], ["mlp.c_proj"]),
               "llama": (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
               "neox": (["query_key_value", "dense_4h_to_h"], ["dense_4h_to_h"]),
               "opt": (["q_proj", "k_proj", "fc2"], ["fc2"]),
               "bert": (["key", "value", "output.dense"], ["output.dense"]),
               "mlp": (["fc1", "fc2"], ["fc2"]), "vit": (["k_proj", "v_proj", "fc2"], ["fc2"])}


# Norms to tune where the architecture has no default; bottleneck blocks where it has none.
LN_TARGETS = {"opt": ["self_attn_layer_norm", "final_layer_norm"], "bert": ["LayerNorm"],
              "neox": ["input_layernorm", "post_attention_layernorm"], "vit": ["layernorm_before", "layernorm_after"]}
BOTTLENECK_TARGETS = {"bert": ["output.dense"], "mlp": ["fc1"], "vit": ["fc2"]}

# The rotations. peft's OFT wraps nn.Linear and nn.Embedding (its nn.Conv2d version does not start
# from the base model, so peftlab has none), not GPT-2's Conv1D: on GPT-2 the row rotates the position
# embedding, and the *_conv1d rows cover Conv1D (peftlab only). peft's HRA wraps nn.Linear and nn.Conv2d.
OFT_TARGETS = {arch: [t for t in ts if t not in ("c_attn", "c_fc", "projection")]
               for arch, ts in LORA_TARGETS.items() if arch != "cnn"}
HRA_TARGETS = {**LINEAR_TARGETS, "vit": ["q_proj", "v_proj", "fc2", "projection"], "cnn": ["conv1", "conv2", "fc"]}


def task(arch: str) -> dict:
    """BERT and ViT classify (a new head, trained in full); the others are language models or plain
    modules. ViT has no task_type: peft's SEQ_CLS model would call it with input_ids."""
    if arch == "bert":
        return {"task_type": "SEQ_CLS", "modules_to_save": ["classifier"]}
    return {"modules_to_save": ["classifier"]} if arch == "vit" else {}


@dataclass(frozen=True)
class Row:
    config: Callable                 # (lib, arch) -> config of that library
    archs: tuple[str, ...]
    identity_at_init: bool = True    # the adapted model starts as the base model
    mergeable: bool = True
    in_peft: bool = True             # peft has the method: round trips both ways
    trains_base: bool = False        # trains base-model tensors (bias="all"): not undone by disabling
    resumable: bool = True           # a saved folder can be trained further
    mixed_batches: bool = True       # one adapter per example in a batch (layer methods)
    base: Callable | None = None     # turns the plain base model into the row's (QLoRA: a 4-bit one)


def quantized(model):
    """The model with its linear layers in NF4 (double quantization): QLoRA's frozen base."""
    quantize_model(model)
    return model


def lora(linear_only: bool = False, **kw) -> Callable:
    def make(lib, arch):
        targets = LINEAR_TARGETS if linear_only or kw.get("init_lora_weights") == "pissa" else LORA_TARGETS
        return lib.LoraConfig(**{"r": 4, "lora_alpha": 8, "target_modules": targets[arch], **task(arch), **kw})
    return make


def lora_with_patterns(lib, arch):
    """Per-module rank and alpha (peft's rank_pattern / alpha_pattern) on the second target."""
    second = LORA_TARGETS[arch][1]
    return lib.LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS[arch], rank_pattern={second: 2},
                          alpha_pattern={second: 16}, **task(arch))


def ia3(lib, arch):
    targets, feedforward = IA3_TARGETS[arch]
    return lib.IA3Config(target_modules=targets, feedforward_modules=feedforward, **task(arch))


def vera(lib, arch):
    """Targets of several shapes, so each layer reads its own corner of the shared projections."""
    return lib.VeraConfig(r=4, target_modules=LINEAR_TARGETS[arch], **task(arch))


def adalora(lib, arch):
    """init_r=4 on the linear targets (GPT-2's Conv1D too: peft's AdaLoRA wraps it), falling to target_r=2."""
    return lib.AdaLoraConfig(init_r=4, target_r=2, lora_alpha=8, total_step=10, target_modules=LINEAR_TARGETS[arch],
                             **task(arch))


def ln_tuning(lib, arch):
    return lib.LNTuningConfig(target_modules=LN_TARGETS.get(arch), **task(arch))


def lycoris(method: str, pattern: dict | None = None, **kw) -> Callable:
    """LoHa or LoKr (`method`: "LoHa", "LoKr") on the linear targets; `pattern` ({"r": .., "alpha": ..})
    gives the second target its own rank and alpha (rank_pattern / alpha_pattern)."""
    def make(lib, arch):
        options = {"r": 4, "alpha": 8, "target_modules": LINEAR_TARGETS[arch], **task(arch), **kw}
        if pattern:
            second = LINEAR_TARGETS[arch][1]
            options.update(rank_pattern={second: pattern["r"]}, alpha_pattern={second: pattern["alpha"]})
        return getattr(lib, f"{method}Config")(**options)
    return make


def oft(targets: dict) -> Callable:
    """Blocks of 4 (every rotated size here is a multiple of 4), Cayley-Neumann (peft's default)."""
    def make(lib, arch):
        return lib.OFTConfig(oft_block_size=4, r=0, target_modules=targets[arch], **task(arch))
    return make


def hra(lib, arch):
    """r = 4 reflections (even: H = I at the start); ViT's patch embedding and the conv net's Conv2d too."""
    return lib.HRAConfig(r=4, target_modules=HRA_TARGETS[arch], **task(arch))


def fourierft(lib, arch):
    """16 coefficients a layer (the smallest target, the MLP's fc2, has 4 x 16 entries), from zero."""
    return lib.FourierFTConfig(n_frequency=16, scaling=150.0, init_weights=True, target_modules=LINEAR_TARGETS[arch],
                               **task(arch))


def bitfit(lib, arch):
    return lib.BitFitConfig(**task(arch))   # every layer that has a bias


def bottleneck(**kw) -> Callable:
    def make(lib, arch):
        return lib.BottleneckConfig(target_modules=BOTTLENECK_TARGETS.get(arch), reduction_factor=4, **task(arch), **kw)
    return make


def soft_prompt(method: str) -> Callable:
    def make(lib, arch):
        config = PROMPT_METHODS[method](lib)
        config.task_type = "CAUSAL_LM"
        return config
    return make


ROWS = {
    "lora": Row(lora(), LORA_ARCHS),
    "rslora": Row(lora(use_rslora=True), LORA_ARCHS),
    "dora": Row(lora(use_dora=True), LORA_ARCHS),
    "pissa": Row(lora(init_lora_weights="pissa", lora_alpha=4), ("gpt2", "llama", "neox", "opt", "mlp")),
    "lora_patterns": Row(lora_with_patterns, LORA_ARCHS),
    "lora_bias_all": Row(lora(bias="all"), ("gpt2", "neox", "opt", "bert", "mlp", "vit", "cnn"), trains_base=True),
    "ia3": Row(ia3, LAYER_ARCHS),
    "vera": Row(vera, LAYER_ARCHS),
    # AdaLoRA: a rank_pattern (triplets cut after allocation) is tested in test_adalora.py: perturbing
    # the masked λ here would make the cut folder differ from the model, in peft as in peftlab.
    "adalora": Row(adalora, LAYER_ARCHS),
    # LoHa and LoKr: peft wraps nn.Linear only; peftlab also GPT-2's Conv1D (rows *_conv1d). On these
    # small layers LoKr's r=2 makes W2 low rank (full on the MLP's), the pattern's r=4 both factors full.
    "loha": Row(lycoris("LoHa"), LYCORIS_ARCHS),
    "loha_patterns": Row(lycoris("LoHa", pattern={"r": 2, "alpha": 16}), LYCORIS_ARCHS),
    "loha_conv1d": Row(lycoris("LoHa"), ("gpt2",), in_peft=False),
    "lokr": Row(lycoris("LoKr", r=2, alpha=4), LYCORIS_ARCHS),
    "lokr_patterns": Row(lycoris("LoKr", pattern={"r": 4, "alpha": 16}, r=2, alpha=4), LYCORIS_ARCHS),
    "lokr_decompose_both": Row(lycoris("LoKr", r=1, alpha=2, decompose_both=True), LYCORIS_ARCHS),
    "lokr_factor_lycoris_init": Row(lycoris("LoKr", r=2, decompose_factor=4, init_weights="lycoris"), LYCORIS_ARCHS),
    "lokr_conv1d": Row(lycoris("LoKr", r=2, alpha=4), ("gpt2",), in_peft=False),
    # Rotations (OFT, HRA) and a spectral update (FourierFT). OFT and HRA on GPT-2's Conv1D: peftlab only.
    "oft": Row(oft(OFT_TARGETS), ("gpt2", "llama", "neox", "opt", "bert", "mlp", "vit")),
    "oft_conv1d": Row(oft({"gpt2": LORA_TARGETS["gpt2"]}), ("gpt2",), in_peft=False),
    "hra": Row(hra, ("llama", "neox", "opt", "bert", "mlp", "vit", "cnn")),
    "hra_conv1d": Row(hra, ("gpt2",), in_peft=False),
    "fourierft": Row(fourierft, LAYER_ARCHS),
    # QLoRA: LoRA and DoRA on the 4-bit base (peftlab/nf4.py); peft would need bitsandbytes' layers.
    "qlora": Row(lora(linear_only=True), QLORA_ARCHS, in_peft=False, base=quantized),
    "qdora": Row(lora(linear_only=True, use_dora=True), QLORA_ARCHS, in_peft=False, base=quantized),
    "ln_tuning": Row(ln_tuning, ("gpt2", "llama", "neox", "opt", "bert", "vit")),
    "bitfit": Row(bitfit, ("gpt2", "neox", "opt", "bert", "mlp", "vit"), in_peft=False),
    "houlsby_adapter": Row(bottleneck(mh_adapter=True, non_linearity="gelu"), LAYER_ARCHS, mergeable=False,
                           in_peft=False),
    "parallel_adapter": Row(bottleneck(is_parallel=True, scaling=4.0), LAYER_ARCHS, mergeable=False, in_peft=False),
    "prompt_tuning": Row(soft_prompt("prompt"), PROMPT_ARCHS, identity_at_init=False, mergeable=False,
                         mixed_batches=False),
    "p_tuning_mlp": Row(soft_prompt("ptune_mlp"), PROMPT_ARCHS, identity_at_init=False, mergeable=False,
                        resumable=False, mixed_batches=False),
    "p_tuning_lstm": Row(soft_prompt("ptune_lstm"), PROMPT_ARCHS, identity_at_init=False, mergeable=False,
                         resumable=False, mixed_batches=False),
    "prefix_tuning": Row(soft_prompt("prefix"), PROMPT_ARCHS, identity_at_init=False, mergeable=False,
                         mixed_batches=False),
    "prefix_projection": Row(soft_prompt("prefix_proj"), PROMPT_ARCHS, identity_at_init=False, mergeable=False,
                             resumable=False, mixed_batches=False),
}


def cases(**wanted) -> list[tuple[str, str]]:
    """(row, arch) pairs of the rows whose flags have the `wanted` values."""
    return [(name, arch) for name, row in ROWS.items() if all(getattr(row, k) == v for k, v in wanted.items())
            for arch in row.archs]
