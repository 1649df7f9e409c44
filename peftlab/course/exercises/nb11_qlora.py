"""Checkers for 11_qlora."""
import torch

from peftlab.nf4 import pack, quantize_nf4
from peftlab.workbook.memory import LLAMA_SHAPES, llama_parameters

from .checking import Verdict, attempted, call_stub, report

NF4_DQ_BITS = 4 + 8 / 64 + 32 / (64 * 256)


def check_7b_nf4_gigabytes(answer) -> Verdict:
    """🌱 Gigabytes (1e9 bytes) of LLaMA-7B's weights in NF4 with double quantization."""
    if not attempted(answer):
        return report("7B in NF4", None)
    n = llama_parameters(*LLAMA_SHAPES["7B"])
    right = n * NF4_DQ_BITS / 8 / 1e9
    if abs(answer - right) < 0.05:
        return report("7B in NF4", True, f"{right:.2f} GB, against {2 * n / 1e9:.1f} GB in 16 bits: it fits a "
                      "laptop GPU, and a 65B model fits one 48 GB GPU with room for LoRA.")
    if abs(answer - n * 4 / 8 / 1e9) < 0.05:
        return report("7B in NF4", False, "4 bits for the codes, and the scaling constants on top: 4.127 bits per weight.")
    if abs(answer - n * 4.5 / 8 / 1e9) < 0.05:
        return report("7B in NF4", False, "that is without double quantization (4.5 bits): the constants take 8 bits.")
    if abs(answer - right * 1e9 / 2**30) < 0.05:
        return report("7B in NF4", False, "that is in GiB (2^30 bytes); the question asks for GB (10^9).")
    return report("7B in NF4", False, "parameters x 4.127 bits / 8 bits per byte / 1e9.")


def check_unpack_codes(fn) -> Verdict:
    """🌿 unpack_codes(packed uint8) -> the codes, two per byte, the high half first."""
    codes = torch.randint(0, 16, (10,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    result = call_stub(fn, pack(codes))
    if not attempted(result):
        return report("unpack the codes", None)
    result = torch.as_tensor(result)
    if result.numel() != 10:
        return report("unpack the codes", False, f"{result.numel()} codes from 5 bytes; there are two per byte.")
    if torch.equal(result.long().flatten(), codes.long()):
        return report("unpack the codes", True, "byte >> 4 and byte & 15, interleaved: what dequantize() starts with.")
    swapped = torch.stack([codes[1::2], codes[0::2]], dim=1).flatten()
    if torch.equal(result.long().flatten(), swapped.long()):
        return report("unpack the codes", False, "the first code of each pair is in the *high* half (byte >> 4).")
    return report("unpack the codes", False, "for each byte b: first b >> 4, then b & 15 (0xF).")


def best_block(linear_weights: dict, budget: float = 4.25) -> tuple[int, dict]:
    """The block size (of 32, 64, 128, 256) with the lowest mean relative error within `budget` bits."""
    stats = {}
    for block in (32, 64, 128, 256):
        quantized = {name: quantize_nf4(w, block, double_quant=True) for name, w in linear_weights.items()}
        error = sum(float((q.dequantize() - w).pow(2).mean() / w.var()) for w, q in
                    zip(linear_weights.values(), quantized.values())) / len(quantized)
        bits = 8 * sum(q.nbytes for q in quantized.values()) / sum(w.numel() for w in linear_weights.values())
        stats[block] = (error, bits)
    allowed = [b for b, (_, bits) in stats.items() if bits <= budget]
    return min(allowed, key=lambda b: stats[b][0]), stats


def check_best_block_size(fn, linear_weights) -> Verdict:
    """🌳 best_block_size(linear_weights) -> the block size with the lowest error within 4.25 bits."""
    answer = call_stub(fn, linear_weights)
    if not attempted(answer):
        return report("best block size", None)
    right, stats = best_block(linear_weights)
    table = ", ".join(f"{b}: {e:.4f} at {bits:.3f} bits" for b, (e, bits) in stats.items())
    if answer == right:
        return report("best block size", True, f"{right} ({table}). Smaller blocks err less until their constants "
                      "cost more bits than the budget allows.")
    if answer == 32 and stats[32][1] > 4.25:
        return report("best block size", False, f"32 errs least but costs {stats[32][1]:.3f} bits, over the budget.")
    return report("best block size", False, f"compare error and bits for each size: {table}.")
