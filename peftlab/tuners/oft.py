"""OFT: Orthogonal Finetuning (Qiu et al. 2023, "Controlling Text-to-Image Diffusion by Orthogonal
Finetuning", arXiv:2306.07280), in the block-diagonal Cayley form peft implements.

Every method before this one adds to the frozen weight. OFT multiplies it by a learned orthogonal
matrix R (RᵀR = I) instead:

    y = W Rᵀ x + b          R: (in, in), orthogonal, block-diagonal          merged: W' = W Rᵀ

Row i of W is neuron i's weight vector in the input space, and W Rᵀ turns every row by the same
R. Lengths and angles survive a rotation, so the rows keep their norms and the angles between
them (the paper's "hyperspherical energy"): W' W'ᵀ = W Rᵀ R Wᵀ = W Wᵀ. The layer computes the
features it computed before, turned together; an additive update can change any of them freely.

Orthogonal by construction: the Cayley transform. A skew-symmetric Q (Qᵀ = −Q, zero diagonal)
is free: its b(b−1)/2 entries above the diagonal are what trains. From it
    use_cayley_neumann=False:  R = (I − Q)(I + Q)⁻¹, orthogonal for every Q (a linear solve);
    use_cayley_neumann=True (the default of peft's field; its docstring says False): no solve, the
        Neumann series of the inverse, cut after n = num_cayley_neumann_terms terms:
        R ≈ I + 2Q + 2Q² + ... + 2Q^(n−2) + Q^(n−1)   (n = 3 is computed as n = 4, as peft does).
        What was cut is at most ρ^(n−1) + 2ρⁿ/(1 − ρ) in norm, for ρ = ‖Q‖₂ < 1 (1.2e-4 at n = 5,
        ρ = 0.1): R is orthogonal up to about that much.
The series sums (I + Q)(I − Q)⁻¹, which is the exact form with Q → −Q, the *transpose* of the
exact R: the two settings turn the layer by opposite angles for the same numbers. Training from
the start with either is the same family of rotations; switching the flag on a trained adapter
undoes its rotation instead (as in peft; tests/test_rotations.py measures both facts).

Block-diagonal: the input (size `in`) is cut into D blocks of b numbers and each block gets its
own b x b rotation, so a layer trains D · b(b−1)/2 ≈ in · (b − 1) / 2 numbers. Give the block
size `oft_block_size` (peft's default 32) or the number of blocks `r`, not both; it must divide
`in` (peft rounds a size that does not to a nearby divisor, with a warning; peftlab refuses it and
lists the sizes that divide). block_share=True: one rotation serves every block (b(b−1)/2 numbers).

peft's constraint options, as peft has them:
- coft=True (constrained OFT): before each use, every stored block's Q is pulled back into the ball
  ‖Q‖_F ≤ eps / √(blocks stored), in place, so training is projected gradient descent and R
  stays within a small distance of I (eps = 6e-5 by default: a tight leash);
- module_dropout=p: in training, int(p · D) of the blocks, chosen at random, are replaced by I for
  the step. peft 0.21.2 builds this layer but never calls it (its forward skips it); peftlab
  applies it. Outputs in eval mode are the same in both.

Layers: nn.Linear, and nn.Embedding (its vectors are rotated: E' = E R), as peft; GPT-2's Conv1D
too, which peft's OFT refuses (such an adapter cannot be loaded by peft). Not convolutions: peft
0.21.2's OFT on nn.Conv2d is not the base model at initialisation and its merged layer differs from
its forward (measured on the conformance table's ViT and conv net), so a correct peftlab version
could not give peft's logits. peft's names: `oft_R.weight` (`oft_embedding_R.weight` for an
embedding), shape (D, b(b−1)/2) or (1, ...) with block_share, Q's upper triangle row by row.
"""
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from .layer import BaseTunerLayer
from .layer_config import LayerMethodConfig, LayerSelection
from .layer_tuner import LayerTuner, record_fan_in_fan_out
from .lora_config import LORA_DEFAULT_TARGETS
from .registry import register_method

OFT_BIAS = ("none", "all", "oft_only")


@dataclass
class OFTConfig(LayerSelection, LayerMethodConfig):
    """OFT, as `peft.OFTConfig` (see the module docstring for what each option does).

    oft_block_size / r: the size of each block, or the number of blocks; exactly one is non-zero.
    use_cayley_neumann, num_cayley_neumann_terms: the series instead of the exact inverse, and its length.
    coft, eps: constrained OFT and its radius.   block_share: one rotation for all blocks.
    module_dropout: blocks set to I in training.   init_weights: True = Q = 0 (R = I, the base
    model at the start); False = Q ~ N(0, 0.1²) (tests only).
    bias: "none", "all" or "oft_only" (trained biases are base weights: disabling does not undo them).
    fan_in_fan_out: recorded for GPT-2's Conv1D, as in LoraConfig.
    """
    peft_type: ClassVar[str] = "OFT"

    r: int = 0
    oft_block_size: int = 32
    module_dropout: float = 0.0
    fan_in_fan_out: bool = False
    bias: str = "none"
    init_weights: bool = True
    coft: bool = False
    eps: float = 6e-5
    block_share: bool = False
    use_cayley_neumann: bool = True
    num_cayley_neumann_terms: int = 5

    def __post_init__(self):
        super().__post_init__()
        self.check_layer_selection(pattern_needs_layers=True)
        if self.r < 0 or self.oft_block_size < 0 or (self.r > 0) == (self.oft_block_size > 0):
            raise ValueError(f"Give exactly one of r (the number of blocks) and oft_block_size (their size), the "
                             f"other 0, since r x oft_block_size = the layer's input size; got r={self.r}, "
                             f"oft_block_size={self.oft_block_size}.")
        if self.bias not in OFT_BIAS:
            raise ValueError(f"bias must be one of {', '.join(map(repr, OFT_BIAS))}, got {self.bias!r}.")
        if not 0.0 <= self.module_dropout < 1.0:
            raise ValueError(f"module_dropout must be in [0, 1), got {self.module_dropout!r}.")
        if self.eps <= 0:
            raise ValueError(f"eps (the radius COFT keeps each block's Q within) must be > 0, got {self.eps!r}.")
        if self.num_cayley_neumann_terms < 2:
            raise ValueError(f"num_cayley_neumann_terms={self.num_cayley_neumann_terms} leaves R = I whatever Q "
                             "is, so nothing would train; use 2 or more (peft's default is 5).")


def block_layout(size: int, config: OFTConfig, module_name: str) -> tuple[int, int]:
    """(number of blocks D, block size b) for a layer rotating `size` numbers, or a clear error."""
    wanted, word = (config.oft_block_size, "oft_block_size") if config.oft_block_size else (config.r, "r")
    sizes = [b for b in range(2, size + 1) if size % b == 0]       # blocks of one number rotate nothing
    fits = sizes if word == "oft_block_size" else [size // b for b in sizes]
    if wanted not in fits:
        what = "the size of the blocks" if word == "oft_block_size" else "the number of blocks"
        raise ValueError(f"{word}={wanted} ({what}) does not fit {module_name or 'this layer'}, which rotates "
                         f"{size} numbers: blocks must cut them evenly into blocks of 2 or more. Values of {word} "
                         f"that fit: {', '.join(map(str, sorted(fits)))}. (peft would round it to a nearby one "
                         "with a warning; peftlab asks you to choose.)")
    return (size // wanted, wanted) if word == "oft_block_size" else (wanted, size // wanted)


def skew_symmetric(vectors: torch.Tensor, block_size: int) -> torch.Tensor:
    """(k, b(b−1)/2) -> (k, b, b): Q with the numbers above the diagonal, row by row, and Qᵀ = −Q."""
    rows, cols = torch.triu_indices(block_size, block_size, 1, device=vectors.device)
    upper = vectors.new_zeros(vectors.shape[0], block_size, block_size)
    upper[:, rows, cols] = vectors
    return upper - upper.transpose(1, 2)


def cayley(Q: torch.Tensor, neumann_terms: int | None) -> torch.Tensor:
    """(k, b, b) skew-symmetric Q -> rotations R: exact (I − Q)(I + Q)⁻¹ when neumann_terms is None,
    else peft's truncated series I + 2Q + ... + 2Q^(m−1) + Q^m, m = max(terms − 1, 3) (terms = 2: I + 2Q)."""
    eye = torch.eye(Q.shape[-1], dtype=Q.dtype, device=Q.device).expand_as(Q)
    if neumann_terms is None:
        return torch.linalg.solve(eye + Q, eye - Q, left=False)   # X (I + Q) = I − Q
    if neumann_terms == 2:
        return eye + 2 * Q
    R, power = eye, eye
    for _ in range(max(neumann_terms - 1, 3) - 1):
        power = power @ Q
        R = R + 2 * power
    return R + power @ Q


class BlockRotation(nn.Module):
    """One adapter's trained numbers in one layer (`weight`, peft's name) and the rotations they make."""

    def __init__(self, blocks: int, block_size: int, config: OFTConfig, **where):
        super().__init__()
        stored = 1 if config.block_share else blocks
        self.weight = nn.Parameter(torch.zeros(stored, block_size * (block_size - 1) // 2, **where))
        self.blocks, self.block_size = blocks, block_size
        self.neumann_terms = config.num_cayley_neumann_terms if config.use_cayley_neumann else None
        self.coft_eps = config.eps if config.coft else None
        self.module_dropout = config.module_dropout
        if not config.init_weights:   # R away from I from the start (tests only), as peft
            nn.init.normal_(self.weight, std=0.1)

    @torch.no_grad()
    def constrain(self) -> None:
        """COFT: scale each stored block's numbers back to ‖Q‖_F <= eps / √(blocks stored), in place."""
        radius = self.coft_eps / math.sqrt(self.weight.shape[0])
        norms = skew_symmetric(self.weight, self.block_size).flatten(1).norm(dim=1, keepdim=True)   # (k, 1)
        self.weight.copy_(torch.where(norms > radius, self.weight * radius / norms, self.weight))

    def rotations(self, dropout: bool = False) -> torch.Tensor:
        """(D, b, b): block d's rotation R_d (with `dropout`, in training: some blocks I)."""
        if self.coft_eps is not None:
            self.constrain()
        R = cayley(skew_symmetric(self.weight, self.block_size), self.neumann_terms)
        R = R.expand(self.blocks, -1, -1)                          # block_share: one R for every block
        dropped = int(self.module_dropout * self.blocks) if dropout and self.weight.shape[0] > 1 else 0
        if dropped:                                                # multiplicative dropout: blocks -> I
            mask = torch.zeros(self.blocks, 1, 1, dtype=R.dtype, device=R.device)
            mask[torch.randperm(self.blocks, device=R.device)[:dropped]] = 1
            R = (1 - mask) * R + mask * torch.eye(self.block_size, dtype=R.dtype, device=R.device)
        return R


def rotate(x: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """x (..., D·b) times block_diag(R) as a row vector (= Rᵀ x as a column), block by block."""
    blocks = x.reshape(*x.shape[:-1], *R.shape[:2])                             # (..., D, b)
    return torch.einsum("...dk,dkc->...dc", blocks, R).reshape(x.shape)


class OFTLayer(BaseTunerLayer):
    """OFT around nn.Linear, Conv1D (input rotated) or nn.Embedding (output vectors rotated)."""
    adapter_layer_names = ("oft_R", "oft_embedding_R")
    other_param_names = ("r", "oft_block_size")

    def __init__(self, base_layer: nn.Module, module_name: str = ""):
        super().__init__(base_layer, module_name)
        self.oft_R, self.oft_embedding_R = nn.ModuleDict(), nn.ModuleDict()
        self.r: dict[str, int] = {}
        self.oft_block_size: dict[str, int] = {}
        self.is_embedding = isinstance(base_layer, nn.Embedding)

    @property
    def stored(self) -> nn.ModuleDict:
        """This layer's {adapter name: BlockRotation}: peft keeps an embedding's under another name."""
        return self.oft_embedding_R if self.is_embedding else self.oft_R

    def update_layer(self, name: str, config: OFTConfig) -> None:
        out_features, in_features = self.get_base_weight().shape
        size = out_features if self.is_embedding else in_features   # an embedding's "out" is its vectors
        blocks, block_size = block_layout(size, config, self.module_name)
        self.r[name], self.oft_block_size[name] = blocks, block_size
        self.stored[name] = BlockRotation(blocks, block_size, config, dtype=self.compute_dtype,
                                          device=self.base_device)

    def rotation_matrix(self, name: str) -> torch.Tensor:
        """R: the (size, size) block-diagonal rotation of adapter `name`."""
        return torch.block_diag(*self.stored[name].rotations())

    def forward_adapters(self, names, x, *args, **kwargs):
        turns = [self.stored[n].rotations(dropout=self.training) for n in names]
        if not self.is_embedding:
            rotated = x.to(self.compute_dtype)
            for R in turns:
                rotated = rotate(rotated, R)
            return self.base_layer(rotated.to(x.dtype), *args, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        rotated = result.to(self.compute_dtype)
        for R in turns:
            rotated = rotate(rotated, R)
        return rotated.to(result.dtype)

    def _turned(self, weight: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        """W (out, in) with R applied as the forward applies it: W Rᵀ, or Rᵀ W for an embedding."""
        return R.T @ weight if self.is_embedding else weight @ R.T

    def merge_weights(self, name, weight, bias):
        return self._turned(weight, self.rotation_matrix(name)), bias

    def unmerge_weights(self, name, weight, bias):
        """With the inverse of each block, which is Rᵀ only where R is exactly orthogonal."""
        inverse = torch.block_diag(*torch.linalg.inv(self.stored[name].rotations()))
        return self._turned(weight, inverse), bias


@register_method
class OFTModel(LayerTuner):
    """OFT's tuner: linear layers and embeddings; default targets are peft's (LoRA's table)."""
    config_class = OFTConfig
    layers = {nn.Linear: OFTLayer, Conv1D: OFTLayer, nn.Embedding: OFTLayer}
    default_targets = LORA_DEFAULT_TARGETS

    @classmethod
    def layer_description(cls) -> str:
        return (super().layer_description() + " (not convolutions: peft's OFT on nn.Conv2d does not start from "
                "the base model, so no version of it here could give peft's outputs)")

    def prepare_config(self, config):
        record_fan_in_fan_out(self, config)
