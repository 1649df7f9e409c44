"""What FSDP (PyTorch's ZeRO stage 3) holds on each GPU: ZeRO's shares plus the units it gathers.

`zero_partition` (memory.py) divides weights, gradients and optimizer state by the number of GPUs, as the
ZeRO paper's Figure 1 does, and leaves out the buffers in which stage 3 gathers a layer before using it.
The 2-rank runs of distributed/fsdp.py measure them: at the peak of a step a rank holds, besides its
shares, the root unit (embeddings, output head, final norm: gathered through the whole step by default),
the block that computes, and the all-gather buffer of one more block (FSDP gathers the next block ahead
while the current one computes its gradients, and keeps the last buffer until the next gather). They are
gathered in the base's storage format: 16-bit for LoRA, 4-bit codes and their constants for QLoRA. The
block that computes also keeps its trainable gradients whole until they are reduce-scattered.

QLoRA's quantization constants: peftlab shards them with the codes (`shard_quantization_state`);
bitsandbytes keeps them on each layer's `quant_state`, which is neither a parameter nor a buffer, so under
FSDP every GPU holds all of them (`constants="replicated"`, what the transformers + accelerate recipe does).
"""
from peftlab.workbook.memory import (
    LLAMA2_SHAPES,
    QLORA_BITS,
    finetuning_memory,
    llama_parameters,
    lora_parameters,
    zero_partition,
)

VOCAB = 32000
CONSTANT_BITS = QLORA_BITS - 4      # per weight: the absmax codes and their scales (8/64 + 32/(64*256) bits)


def llama_block_parameters(hidden: int, ffn: int, kv: int | None = None) -> int:
    """Parameters of one LLaMA block: q, k, v, o, gate, up, down and two RMSNorm gains."""
    return (llama_parameters(hidden, ffn, 1, kv=kv) - 2 * VOCAB * hidden - hidden)


def fsdp_memory(size: str, method: str, gpus: int, constants: str = "sharded", r: int = 64, batch: int = 1,
                seq: int = 512, checkpointing: bool = True, gathered_blocks: int = 2) -> dict[str, int]:
    """Bytes on each of `gpus` GPUs that fine-tune Llama 2 `size` with FSDP (full sharding): ZeRO-3's shares of
    notebook 11's bill, plus "gathered units" (the root, `gathered_blocks` blocks, one block's gradients) and,
    for QLoRA with `constants="replicated"`, the quantization constants whole on every GPU."""
    if constants not in ("sharded", "replicated"):
        raise ValueError(f"constants must be 'sharded' (peftlab) or 'replicated' (bitsandbytes), not {constants!r}.")
    if size not in LLAMA2_SHAPES:
        raise ValueError(f"Unknown Llama 2 size {size!r}; choose one of {', '.join(LLAMA2_SHAPES)}.")
    per_gpu = zero_partition(finetuning_memory(size, method, r, batch, seq, checkpointing, generation=2), gpus, 3)
    hidden, ffn, layers, kv = LLAMA2_SHAPES[size]
    block = llama_block_parameters(hidden, ffn, kv)
    adapter = 0 if method == "full" else lora_parameters(hidden, ffn, 1, r, kv)        # one block's adapters
    root = (2 * VOCAB * hidden + hidden) * 2                                           # 16-bit in every method
    block_bytes = round(block * (QLORA_BITS if method == "QLoRA" else 16) / 8) + 2 * adapter
    block_gradients = 2 * (block if method == "full" else adapter)
    per_gpu["gathered units"] = root + gathered_blocks * block_bytes + block_gradients
    if method == "QLoRA" and constants == "replicated":
        whole = round(layers * block * CONSTANT_BITS / 8)
        per_gpu["weights"] += whole - -(-whole // gpus)                            # every GPU keeps the rest too
    per_gpu.pop("total")
    return per_gpu | {"total": sum(per_gpu.values())}


def fewest_fsdp_gpus(size: str, method: str, gpu_bytes: float, counts=range(1, 65), **options) -> int | None:
    """The smallest number of GPUs in `counts` on which each GPU's FSDP bill fits in `gpu_bytes`, or None."""
    return next((n for n in counts if fsdp_memory(size, method, n, **options)["total"] <= gpu_bytes), None)
