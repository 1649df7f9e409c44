"""NF4, the 4-bit NormalFloat of QLoRA (Dettmers et al. 2023, "QLoRA: Efficient Finetuning of
Quantized LLMs", arXiv:2305.14314, §3), with blockwise absmax scaling and double quantization.

A pretrained weight matrix is close to normally distributed. With 4 bits there are 16 values to
spend; NF4 puts them at *quantiles* of the standard normal, so that each level is hit by about the
same share of the weights (an information-theoretically optimal code for normal data), rescaled to
[-1, 1]. It is asymmetric, to have an exact zero: 8 levels above zero, 7 below, and 0.

Quantizing a tensor (`quantize_nf4`): cut it into blocks of 64 numbers, divide each block by its
largest absolute value (absmax, so the block fits [-1, 1]), and store for each number the index of
the nearest level: 4 bits, two per byte. The absmax constants cost 32 bits per block, 0.5 bits per
weight; *double quantization* quantizes them too (8 bits each, in blocks of 256, after subtracting
their mean), which brings the cost to 8/64 + 32/(64*256) bits: 4.127 bits per weight in all.

`Linear4bit` keeps a frozen linear layer that way and dequantizes it on the fly; LoRA trains on top
of it in full precision (QLoRA). `quantize_model` swaps a model's linear layers for it. The library
never imports bitsandbytes; the tests compare with it.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from peftlab.counting import stored_bytes

NF4_BITS = 4


def nf4_levels() -> torch.Tensor:
    """The 16 NormalFloat levels, from quantiles of N(0, 1) (float64 until the end).

    Positive side: 8 levels at the quantiles of 9 evenly spaced probabilities from `offset` down to
    1/2 (the last is the median, 0, dropped); negative side: 7 levels the same way. `offset` stays
    away from probability 1 (whose quantile is infinite): 1 - (1/(2*15) + 1/(2*16)) / 2, the middle
    of where the outermost level would sit for 15 and for 16 equal-mass bins. Then divide by the
    largest level, so the levels span [-1, 1].
    """
    offset = 1 - (1 / (2 * 15) + 1 / (2 * 16)) / 2                                  # 0.9677...
    positive = torch.special.ndtri(torch.linspace(offset, 0.5, 9, dtype=torch.float64)[:-1])    # 8
    negative = -torch.special.ndtri(torch.linspace(offset, 0.5, 8, dtype=torch.float64)[:-1])   # 7
    levels = torch.cat([negative, torch.zeros(1, dtype=torch.float64), positive]).sort().values
    return (levels / levels.max()).float()                                          # (16,)


NF4_LEVELS = nf4_levels()


def nearest_level(x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Index of the level nearest to each entry of x (levels sorted): uint8 codes."""
    midpoints = (levels[1:] + levels[:-1]) / 2                                      # (15,) decision thresholds
    return torch.bucketize(x, midpoints.to(x.dtype)).to(torch.uint8)


def pack(codes: torch.Tensor) -> torch.Tensor:
    """Two 4-bit codes per byte: the first in the high half. (n,) -> (ceil(n / 2),)"""
    if codes.numel() % 2:
        codes = torch.cat([codes, codes.new_zeros(1)])
    pairs = codes.view(-1, 2)
    return pairs[:, 0] << 4 | pairs[:, 1]


def unpack(packed: torch.Tensor, n: int) -> torch.Tensor:
    """The n codes of `packed`, as int32 (what index_select takes)."""
    return torch.stack([packed >> 4, packed & 0xF], dim=1).flatten()[:n].int()


@dataclass
class QuantizedAbsmax:
    """Double quantization: the absmax constants in 8 bits, in blocks of 256, after taking out their mean."""
    codes: torch.Tensor        # int8, one per absmax
    scales: torch.Tensor       # float32, one per block of 256 absmax constants
    mean: torch.Tensor         # float32, one for the whole tensor
    block_size: int = 256

    @classmethod
    def quantize(cls, absmax: torch.Tensor, block_size: int = 256) -> "QuantizedAbsmax":
        mean = absmax.mean()
        centered = absmax - mean                                                    # positive constants: centre them
        padded = F.pad(centered, (0, -len(centered) % block_size)).view(-1, block_size)
        scales = padded.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny)   # (n_blocks,)
        codes = (padded / scales[:, None] * 127).round().to(torch.int8).flatten()[:len(absmax)]
        return cls(codes, scales, mean, block_size)

    def dequantize(self) -> torch.Tensor:
        n = len(self.codes)
        padded = F.pad(self.codes.float(), (0, -n % self.block_size)).view(-1, self.block_size)
        return (padded * self.scales[:, None] / 127).flatten()[:n] + self.mean

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.codes, self.scales, self.mean))


@dataclass
class NF4Tensor:
    """A tensor stored in NF4: packed codes, absmax constants (plain or double-quantized), its shape."""
    packed: torch.Tensor                      # uint8, two codes per byte
    absmax: torch.Tensor | QuantizedAbsmax    # one per block
    shape: torch.Size
    block_size: int
    dtype: torch.dtype                        # the dtype it was quantized from, and dequantizes to

    def absmax_values(self) -> torch.Tensor:
        return self.absmax.dequantize() if isinstance(self.absmax, QuantizedAbsmax) else self.absmax

    def dequantize(self) -> torch.Tensor:
        """The tensor again, each entry replaced by its level times its block's absmax."""
        n = self.shape.numel()
        values = NF4_LEVELS.to(self.packed.device).index_select(0, unpack(self.packed, n))   # (n,) in [-1, 1]
        absmax = self.absmax_values()
        if n % self.block_size == 0:            # the usual case: scale whole blocks, no copy of the scales
            return (values.view(-1, self.block_size) * absmax[:, None]).view(self.shape).to(self.dtype)
        return (values * absmax.repeat_interleave(self.block_size)[:n]).view(self.shape).to(self.dtype)

    @property
    def nbytes(self) -> int:
        """Every byte stored: the codes and the scaling constants."""
        absmax = self.absmax.nbytes if isinstance(self.absmax, QuantizedAbsmax) else \
            self.absmax.numel() * self.absmax.element_size()
        return self.packed.numel() * self.packed.element_size() + absmax

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.nbytes / self.shape.numel()


def check_quantizable(weight: torch.Tensor, block_size, name: str = "the weight") -> None:
    """A block size is a positive integer; a weight is finite: one NaN or inf makes its block's absmax
    NaN, so the whole block (with double quantization, the whole layer) dequantizes to NaN."""
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size <= 0:
        raise ValueError(f"block_size must be a positive integer (64 in QLoRA), got {block_size!r}.")
    if not torch.isfinite(weight).all():
        raise ValueError(f"{name} holds NaN or inf ({int((~torch.isfinite(weight)).sum())} of {weight.numel()} "
                         "values); NF4 would turn its whole block into NaN. Fix or reload the weights first.")


def quantize_nf4(weight: torch.Tensor, block_size: int = 64, double_quant: bool = False) -> NF4Tensor:
    """`weight` in NF4 with blockwise absmax scaling (and, with `double_quant`, 8-bit absmax)."""
    check_quantizable(weight, block_size)
    flat = weight.detach().float().flatten()
    blocks = F.pad(flat, (0, -len(flat) % block_size)).view(-1, block_size)         # (n_blocks, block_size)
    absmax = blocks.abs().amax(dim=1)                                                 # (n_blocks,)
    normalized = blocks / absmax.clamp_min(torch.finfo(torch.float32).tiny)[:, None]   # in [-1, 1]
    codes = nearest_level(normalized.flatten()[:len(flat)], NF4_LEVELS.to(weight.device))
    stored_absmax = QuantizedAbsmax.quantize(absmax) if double_quant else absmax
    return NF4Tensor(pack(codes), stored_absmax, weight.shape, block_size, weight.dtype)


class DequantizedMatmul(torch.autograd.Function):
    """x @ W^T with W dequantized from 4 bits, in the forward pass *and again* in the backward pass.

    A plain F.linear(x, layer.dequantize()) would make autograd keep the float W until the backward
    pass: a full-precision copy of every 4-bit layer at once, which is the memory QLoRA set out to
    save. The base is frozen, so the backward needs only grad_x = grad_y @ W: dequantizing again
    costs a little time and keeps nothing but the 4-bit layer between the two passes.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: "Linear4bit") -> torch.Tensor:
        ctx.layer = layer
        return x @ layer.dequantize().to(x.dtype).T                                   # (..., out)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        return grad_y @ ctx.layer.dequantize().to(grad_y.dtype), None                 # (..., in)


class Linear4bit(nn.Module):
    """A frozen linear layer kept in NF4 and dequantized for every forward (QLoRA's frozen base).

    `weight` holds the packed codes (uint8, two per byte; `logical_numel` says how many weights
    they stand for), the absmax constants are buffers, the bias stays as it was. `dequantize()`
    gives the (out, in) matrix in `compute_dtype`: the seam LoRA, DoRA and merging read the base
    through (tuners/layer.py).
    """

    def __init__(self, layer: nn.Module, block_size: int = 64, double_quant: bool = True,
                 compute_dtype: torch.dtype | None = None):
        super().__init__()
        W = layer.weight.detach()
        W = W.T if type(layer).__name__ == "Conv1D" else W                           # GPT-2 stores (in, out)
        self.out_features, self.in_features = W.shape
        self.block_size, self.compute_dtype = block_size, compute_dtype or W.dtype
        quantized = quantize_nf4(W, block_size, double_quant)
        self.weight = nn.Parameter(quantized.packed, requires_grad=False)
        self.weight.logical_numel = W.numel()                                         # what parameter counts see
        if isinstance(quantized.absmax, QuantizedAbsmax):
            self.register_buffer("absmax_codes", quantized.absmax.codes)
            self.register_buffer("absmax_scales", quantized.absmax.scales)
            self.register_buffer("absmax_mean", quantized.absmax.mean)
        else:
            self.register_buffer("absmax", quantized.absmax)
        bias = getattr(layer, "bias", None)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    @property
    def double_quant(self) -> bool:
        return hasattr(self, "absmax_codes")

    def quantized(self) -> NF4Tensor:
        absmax = QuantizedAbsmax(self.absmax_codes, self.absmax_scales, self.absmax_mean) if self.double_quant \
            else self.absmax
        return NF4Tensor(self.weight, absmax, torch.Size((self.out_features, self.in_features)), self.block_size,
                         self.compute_dtype)

    def dequantize(self) -> torch.Tensor:
        return self.quantized().dequantize()                                          # (out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = DequantizedMatmul.apply(x, self)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    @property
    def nbytes(self) -> int:
        bias = 0 if self.bias is None else self.bias.numel() * self.bias.element_size()
        return self.quantized().nbytes + bias

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, NF4 in blocks of "
                f"{self.block_size}{', double quantization' if self.double_quant else ''}")


def quantize_model(model: nn.Module, block_size: int = 64, double_quant: bool = True,
                   compute_dtype: torch.dtype | None = None) -> dict[str, int]:
    """Swap every linear layer of `model` (nn.Linear, GPT-2's Conv1D) but the output head for a
    Linear4bit, in place; embeddings stay as they are. Returns the bytes the model holds before and
    after (every parameter and buffer, shared tensors once) and the number of layers swapped."""
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    before = stored_bytes(model)
    names = [n for n, m in model.named_modules()
             if (isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D") and m is not head]
    for name in names:   # all checked before any is swapped: a refusal leaves the model as it was
        check_quantizable(model.get_submodule(name).weight, block_size, name)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, Linear4bit(getattr(parent, child), block_size, double_quant, compute_dtype))
    return {"bytes_before": before, "bytes_after": stored_bytes(model), "layers": len(names)}
