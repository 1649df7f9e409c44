"""Parameter counts and the memory arithmetic of training with Adam.

Per trainable parameter, Adam keeps the weight, its gradient and two moment estimates
(Kingma & Ba, 2014, arXiv:1412.6980). In fp32 that is 4 + 4 + 4 + 4 = 16 bytes. Mixed
precision (Micikevicius et al., 2017, arXiv:1710.03740) keeps a 16-bit working copy of the
weights and 16-bit gradients, but also an fp32 master copy and fp32 moments:
2 + 2 + 4 + 4 + 4 = 16 bytes again (the ZeRO paper's count, Rajbhandari et al., 2019,
arXiv:1910.02054). Mixed precision saves time and activation memory, not optimizer memory.
A *frozen* parameter needs only its weight: 4 bytes in fp32, 2 in 16-bit. That asymmetry is
what parameter-efficient fine-tuning exploits. Activations are counted apart (they depend on
batch size and sequence length more than on how many parameters train): `llama_activation_bytes`.
"""
import torch

from peftlab.counting import parameter_counts, stored_bytes, weight_count  # noqa: F401  (the workbook's names)

# bytes per parameter: (weight, gradient, fp32 master copy, Adam moments m and v)
PRECISIONS = {
    "fp32": {"weight": 4, "gradient": 4, "master": 0, "adam": 8},
    "mixed": {"weight": 2, "gradient": 2, "master": 4, "adam": 8},
}


def memory_breakdown(total: int, trainable: int | None = None, precision: str = "fp32",
                     frozen_bits: float | None = None) -> dict[str, int]:
    """Bytes of weights, gradients, master weights and Adam states when `trainable` of `total`
    parameters train (default: all of them, i.e. full fine-tuning). `frozen_bits`: the frozen
    parameters are stored in that many bits each (QLoRA's NF4 with double quantization: 4.127)."""
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}.")
    trainable = total if trainable is None else trainable
    if not 0 <= trainable <= total:
        raise ValueError(f"trainable ({trainable}) must be between 0 and total ({total}).")
    b = PRECISIONS[precision]
    frozen_bytes = b["weight"] if frozen_bits is None else frozen_bits / 8
    weights = round(trainable * b["weight"] + (total - trainable) * frozen_bytes)
    parts = {"weights": weights, "gradients": trainable * b["gradient"],
             "master weights": trainable * b["master"], "Adam moments": trainable * b["adam"]}
    return parts | {"total": sum(parts.values())}


def measured_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
    """Bytes actually held by the model's weights, its gradients and the optimizer's state tensors."""
    unique = list({id(p): p for p in model.parameters()}.values())
    weights = sum(p.numel() * p.element_size() for p in unique)
    grads = sum(p.grad.numel() * p.grad.element_size() for p in unique if p.grad is not None)
    state = 0
    if optimizer is not None:
        for s in optimizer.state.values():
            # Adam's `step` counter is a scalar tensor: bookkeeping, not per-parameter memory.
            state += sum(t.numel() * t.element_size() for k, t in s.items()
                         if torch.is_tensor(t) and k != "step")
    return {"weights": weights, "gradients": grads, "Adam moments": state, "total": weights + grads + state}


# LLaMA's shapes (Touvron et al. 2023, arXiv:2302.13971, Table 2): hidden, FFN width, layers; vocabulary 32,000.
LLAMA_SHAPES = {"7B": (4096, 11008, 32), "13B": (5120, 13824, 40), "33B": (6656, 17920, 60), "65B": (8192, 22016, 80)}
# Llama 2 (Touvron et al. 2023, arXiv:2307.09288): 7B and 13B keep LLaMA's shapes; 70B has FFN width 28,672 and
# grouped-query attention, 8 key/value heads of 128, so k and v are 1,024 wide. (hidden, FFN, layers, k/v width).
LLAMA2_SHAPES = {"7B": (4096, 11008, 32, 4096), "13B": (5120, 13824, 40, 5120), "70B": (8192, 28672, 80, 1024)}


def llama_parameters(hidden: int, ffn: int, layers: int, vocab: int = 32000, kv: int | None = None) -> int:
    """Parameters of a LLaMA model: untied input and output embeddings, and per block q, o (hidden x
    hidden), k, v (hidden x kv; kv = hidden without grouped-query attention), gate, up, down (hidden x
    ffn) and two RMSNorm gains; one final norm."""
    kv = hidden if kv is None else kv
    return 2 * vocab * hidden + layers * (2 * hidden * (hidden + kv) + 3 * hidden * ffn + 2 * hidden) + hidden


def lora_parameters(hidden: int, ffn: int, layers: int, r: int, kv: int | None = None) -> int:
    """LoRA at rank r on every linear layer of the blocks (QLoRA's setting): r (in + out) each."""
    kv = hidden if kv is None else kv
    return layers * r * (2 * (hidden + hidden) + 2 * (hidden + kv) + 3 * (hidden + ffn))


def llama_block_activations(hidden: int, ffn: int, r: int | None = None, seq: int = 512,
                             attention: str = "sdpa", heads: int | None = None, kv: int | None = None) -> int:
    """Values one LLaMA block keeps per token for the backward pass (counted from what autograd saves,
    and checked against it in tests/test_memory.py). With LoRA at rank r on its seven linear layers
    and a frozen base: 8 hidden-sized tensors (each RMSNorm's input and output, q, k, v, attention's
    output), 4 FFN-sized ones (gate, up, SiLU(gate), their product), each adapter's A x (r), one
    softmax normaliser per head and one RMS per norm. Full fine-tuning (r=None) keeps 2 more
    hidden-sized tensors: a trainable gain needs its normalised input. Attention that writes out
    its probabilities ("eager") keeps heads x seq of them per token instead of one per head. With
    grouped-query attention (k and v `kv` wide), fused attention keeps k and v at that width; "eager"
    attention keeps them repeated to every head, hidden-sized (both measured in tests/test_memory_planning.py)."""
    if attention not in ("sdpa", "eager"):
        raise ValueError(f"Unknown attention {attention!r}; choose 'sdpa' (fused, as in flash attention) or 'eager'.")
    heads = heads or hidden // 128                          # LLaMA's heads are 128 wide
    per_head = seq if attention == "eager" else 1
    adapted = 10 * hidden if r is None else 8 * hidden + 7 * r
    narrower = 0 if kv is None or attention == "eager" else 2 * (hidden - kv)     # k and v
    return adapted - narrower + 4 * ffn + heads * per_head + 2


def llama_activation_bytes(hidden: int, ffn: int, layers: int, batch: int, seq: int, r: int | None = None,
                           checkpointing: bool = True, value_bytes: int = 2, vocab: int = 32000,
                           attention: str = "sdpa", heads: int | None = None, kv: int | None = None) -> int:
    """Bytes of activations kept for the backward pass of a LLaMA on batch x seq tokens. Gradient
    checkpointing (as QLoRA trains) keeps only each block's input and recomputes one block at a time
    in the backward pass; without it every block keeps everything. The logits are kept in fp32 for
    the loss. The final norm keeps 3 hidden-sized tensors and its RMS in full fine-tuning; with
    LoRA, what it keeps equals what the first block does not (its input comes from a frozen
    embedding, so it needs no gradient)."""
    block = llama_block_activations(hidden, ffn, r, seq, attention, heads, kv)
    blocks = layers * hidden + block if checkpointing else layers * block
    final_norm = 3 * hidden + 1 if r is None else 0
    return batch * seq * ((blocks + final_norm) * value_bytes + vocab * 4)


QLORA_BITS = 4 + 8 / 64 + 32 / (64 * 256)   # NF4 with double quantization, blocks of 64 (peftlab/nf4.py)


def finetuning_memory(size: str, method: str, r: int = 64, batch: int = 1, seq: int = 512,
                      checkpointing: bool = True, generation: int = 1) -> dict[str, int]:
    """Bytes to fine-tune a LLaMA of `size` (`generation` 1: LLaMA, 7B-65B; 2: Llama 2, 7B, 13B, 70B) with
    Adam in mixed precision: "full", "LoRA" (16-bit frozen base) or "QLoRA" (NF4 base), LoRA at rank r
    on every linear layer of the blocks; activations for batch x seq tokens. QLoRA quantizes the
    blocks' linear layers only: embeddings and output head stay 16-bit."""
    if method not in ("full", "LoRA", "QLoRA"):
        raise ValueError(f"Unknown method {method!r}; choose 'full', 'LoRA' or 'QLoRA'.")
    shapes = {1: {k: (*v, None) for k, v in LLAMA_SHAPES.items()}, 2: LLAMA2_SHAPES}.get(generation)
    if shapes is None:
        raise ValueError(f"Unknown LLaMA generation {generation!r}; choose 1 (LLaMA) or 2 (Llama 2).")
    if size not in shapes:
        raise ValueError(f"Unknown LLaMA size {size!r}; choose one of {', '.join(shapes)}.")
    hidden, ffn, layers, kv = shapes[size]
    base = llama_parameters(hidden, ffn, layers, kv=kv)
    adapters = 0 if method == "full" else lora_parameters(hidden, ffn, layers, r, kv)
    parts = memory_breakdown(base + adapters, adapters or None, precision="mixed",
                             frozen_bits=QLORA_BITS if method == "QLoRA" else None)
    if method == "QLoRA":
        embeddings = 2 * 32000 * hidden
        parts["weights"] += round(embeddings * (2 - QLORA_BITS / 8))
    parts["activations"] = llama_activation_bytes(hidden, ffn, layers, batch, seq,
                                                  None if method == "full" else r, checkpointing, kv=kv)
    parts.pop("total")
    return parts | {"total": sum(parts.values())}


# What each ZeRO stage partitions over the data-parallel GPUs (Rajbhandari et al. 2019, arXiv:1910.02054, Fig. 1):
# 1 the optimizer states (fp32 master weights and Adam's moments), 2 also the gradients, 3 also the weights.
ZERO_PARTITIONED = {0: (), 1: ("master weights", "Adam moments"), 2: ("master weights", "Adam moments", "gradients"),
                    3: ("master weights", "Adam moments", "gradients", "weights")}


def zero_partition(parts: dict[str, int], gpus: int, zero_stage: int) -> dict[str, int]:
    """Bytes on each of `gpus` data-parallel GPUs of a memory bill (as memory_breakdown or finetuning_memory
    give it) under ZeRO stage 0 (plain DDP: every GPU holds everything) to 3: the partitioned parts are
    divided by the number of GPUs, the rest (activations: each GPU keeps its own batch's) is not. Left
    out, as in the paper's Figure 1: the buffers in which stage 3 gathers a layer's weights before using
    them, and the communication buckets."""
    if zero_stage not in ZERO_PARTITIONED:
        raise ValueError(f"Unknown ZeRO stage {zero_stage!r}; choose 0 (plain data parallelism), 1, 2 or 3.")
    if gpus < 1:
        raise ValueError(f"gpus must be at least 1, not {gpus}.")
    per_gpu = {name: -(-value // gpus) if name in ZERO_PARTITIONED[zero_stage] else value   # whole shards: rounded up
               for name, value in parts.items() if name != "total"}
    return per_gpu | {"total": sum(per_gpu.values())}


def data_parallel_memory(size: str, method: str, gpus: int = 1, zero_stage: int = 0, r: int = 64, batch: int = 1,
                         seq: int = 512, checkpointing: bool = True, generation: int = 2) -> dict[str, int]:
    """Bytes on each of `gpus` GPUs that fine-tune Llama 2 `size` (or LLaMA, generation=1) data-parallel
    with ZeRO stage `zero_stage`, each GPU on its own batch x seq tokens. A frozen base is partitioned
    only by stage 3: stages 1 and 2 divide what trains, which for LoRA is almost nothing."""
    return zero_partition(finetuning_memory(size, method, r, batch, seq, checkpointing, generation), gpus, zero_stage)


def fewest_gpus(size: str, method: str, gpu_bytes: float, zero_stage: int,
                counts=range(1, 65), **options) -> int | None:
    """The smallest number of GPUs in `counts` (every count from 1 to 64: ZeRO needs no power of two) on
    which each GPU's bill fits in `gpu_bytes`, or None."""
    fitting = (n for n in counts if data_parallel_memory(size, method, n, zero_stage, **options)["total"] <= gpu_bytes)
    return next(fitting, None)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
