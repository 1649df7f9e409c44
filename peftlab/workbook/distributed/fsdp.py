"""Fully sharded data parallelism: one rank of a job, PyTorch's FSDP2 (`fully_shard`) around the workbook's `train()`.

DDP keeps a whole copy of the model on every rank. FSDP (Zhao et al. 2023, *PyTorch FSDP*, arXiv:2304.11277;
the idea of ZeRO stage 3, Rajbhandari et al. 2019, arXiv:1910.02054) cuts every parameter in N pieces along
its first dimension, and each rank keeps one piece. The model is sharded in *units*: each decoder block,
frozen base and adapter together (FSDP2 shards parameter by parameter, so a unit may mix frozen and trainable
ones; FSDP1 flattened a unit into one tensor, which is why peft's FSDP1 recipe wraps the adapter's layers
apart), then the rest (embeddings, tied head, final norm) as the root unit. A unit is gathered whole only
while it computes:

    forward,  block i:  all-gather block i (each rank sends its piece)  -> compute -> drop the other pieces
    backward, block i:  all-gather block i again -> gradients -> reduce-scatter the adapter's gradients
                        (each rank keeps the sum of its piece) -> drop the other pieces
    step:               AdamW on this rank's piece of the adapter (so its Adam state is split too)

The root unit stays gathered from its forward to the end of its backward (torch's default for the root).
Each block, frozen base included, travels twice per step and the root once; DDP sends only the adapter's
gradients: FSDP trades traffic for memory. A QLoRA base shards as well: `shard_quantization_state` makes
each 4-bit layer's scaling constants frozen parameters, so they are cut and gathered with the packed codes.
"""
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from peftlab.hf_format import get_peft_model_state_dict
from peftlab.nf4 import Linear4bit
from peftlab.workbook.training import History

from .collectives import CollectiveLog, tensor_bytes

QUANTIZATION_CONSTANTS = ("absmax", "absmax_codes", "absmax_scales")   # 1-D; the scalar absmax_mean stays a buffer


def decoder_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's repeated blocks, by the class names transformers lists in `_no_split_modules` (what
    accelerate's TRANSFORMER_BASED_WRAP shards by default)."""
    names = next((set(m._no_split_modules) for m in model.modules() if getattr(m, "_no_split_modules", None)), set())
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    if not blocks:
        raise ValueError(f"Found no decoder block to shard in {type(model).__name__}: FSDP here shards a transformers "
                         "model's `_no_split_modules` (LlamaDecoderLayer, GPT2Block...).")
    return blocks


def shard_quantization_state(model: torch.nn.Module) -> int:
    """Turn every Linear4bit's scaling constants from buffers into frozen parameters (counted as 0 weights), so
    that fully_shard, which shards parameters and copies buffers whole, shards them with the packed codes.
    Returns the number of tensors moved. (fully_shard refuses 0-d parameters: absmax_mean, one float, stays.)"""
    moved = 0
    for layer in (m for m in model.modules() if isinstance(m, Linear4bit)):
        for name in QUANTIZATION_CONSTANTS:
            if name in layer._buffers:
                constant = torch.nn.Parameter(layer._buffers.pop(name), requires_grad=False)
                constant.logical_numel = 0
                layer.register_parameter(name, constant)
                moved += 1
    return moved


def shard(model: torch.nn.Module, device: torch.device) -> dict[str, list[str]]:
    """fully_shard each decoder block, then the model (the root unit: the parameters the blocks leave).
    Returns {unit: names of its parameters}, root first (fully_shard replaces the parameter objects, so
    units are kept by name)."""
    blocks = decoder_blocks(model)
    names = {id(p): n for n, p in model.named_parameters()}
    units = {f"block {i}": [names[id(p)] for p in block.parameters()] for i, block in enumerate(blocks)}
    in_blocks = {n for unit in units.values() for n in unit}
    units = {"root": [n for n in names.values() if n not in in_blocks]} | units
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return units


def padded_bytes(p: torch.Tensor, world_size: int) -> int:
    """Bytes of `p` as FSDP gathers it: its first dimension rounded up to a multiple of the number of ranks."""
    rows = p.shape[0]
    return -(-rows // world_size) * world_size * (p.numel() // rows) * p.element_size()


def piece_bytes(p: torch.Tensor, rank: int, world_size: int) -> int:
    """Bytes of `p` that `rank` keeps: rows [rank * c, (rank + 1) * c) of its first dimension, c = ceil(rows / N)
    (the last ranks may keep fewer, or none)."""
    rows = p.shape[0]
    chunk = -(-rows // world_size)
    return max(0, min(chunk, rows - rank * chunk)) * (p.numel() // rows) * p.element_size()


def expected_traffic(params: dict[str, torch.Tensor], units: dict[str, list[str]], world_size: int) -> dict[str, int]:
    """Bytes per step by kind of collective, from the shapes alone: every block is gathered twice (forward,
    then backward), the root once (it stays gathered through the backward); the trainable gradients of each
    unit are reduce-scattered; clipping (torch's clip_grad_norm_ on sharded gradients) all-reduces one partial
    norm per trainable tensor, in fp32."""
    trainable = [params[n] for names in units.values() for n in names if params[n].requires_grad]
    gathered = {unit: sum(padded_bytes(params[n], world_size) for n in names) for unit, names in units.items()}
    return {"all-gather": sum(size * (1 if unit == "root" else 2) for unit, size in gathered.items()),
            "reduce-scatter": sum(padded_bytes(p, world_size) for p in trainable),
            "all-reduce": 4 * len(trainable)}


class HeldParameters:
    """The bytes of parameters this rank holds at each moment of one training step: its pieces of every
    parameter, always; each unit gathered whole at that moment (its parameters are then registered as plain
    tensors: FSDP swaps them back for DTensors when it frees them); and the all-gather buffer FSDP still
    holds, which `log` follows (FSDP keeps its last buffer until the next gather; in the backward pass that
    is the next block's, gathered ahead while the current block computes its gradients).
    Moments are sampled by hooks on the layers: when a layer computes its output ("forward") and when its
    output's gradient arrives ("backward"); `on_step` ends the recording after the first optimizer step."""

    def __init__(self, model: torch.nn.Module, units: dict[str, list[str]], world_size: int, log: CollectiveLog):
        self.model, self.units, self.log = model, units, log
        params = dict(model.named_parameters())
        self.pieces = sum(tensor_bytes(p) for p in params.values())
        self.whole = {unit: sum(padded_bytes(params[n], world_size) for n in names) for unit, names in units.items()}
        self.unit_of = {n: unit for unit, names in units.items() for n in names}
        self.moments: list[dict] = []
        self.sample("before the step")
        unit_of_param = {id(p): self.unit_of[n] for n, p in params.items()}     # tied weights: one object
        self.handles = []
        for module in model.modules():
            unit = next((unit_of_param[id(p)] for p in module.parameters(recurse=False)), None)
            if unit is not None:
                self.handles.append(module.register_forward_hook(self._hook(unit)))

    def gathered(self) -> list[str]:
        params = dict(self.model.named_parameters())
        return [unit for unit, names in self.units.items() if not isinstance(params[names[0]], DTensor)]

    def sample(self, moment: str) -> None:
        gathered, ahead = self.gathered(), self.log.gathering_bytes()
        held = self.pieces + sum(self.whole[u] for u in gathered) + ahead
        sample = {"moment": moment, "gathered": gathered, "gathering": ahead, "bytes": held}
        if self.moments and self.moments[-1]["moment"] == moment:   # one moment seen by many layers: keep its peak
            if held > self.moments[-1]["bytes"]:
                self.moments[-1] = sample
            return
        self.moments.append(sample)

    def _hook(self, unit: str):
        def forward_hook(module, inputs, output):
            self.sample(f"forward {unit}")
            if isinstance(output, torch.Tensor) and output.requires_grad:
                output.register_hook(lambda grad: self.sample(f"backward {unit}"))
        return forward_hook

    def on_step(self, step: int) -> None:
        if self.handles:
            self.sample("after the optimizer step")
            for handle in self.handles:
                handle.remove()
            self.handles = []


def frozen_and_trainable_bytes(params, held: Callable[[torch.Tensor], int]) -> dict[str, int]:
    """{"frozen": bytes, "trainable": bytes} of the parameters, each counted by `held`."""
    return {"frozen": sum(held(p) for p in params if not p.requires_grad),
            "trainable": sum(held(p) for p in params if p.requires_grad)}


def train_sharded(model: torch.nn.Module, device: torch.device, run: Callable[..., History],
                  on_step: Callable[[int], None] | None = None) -> tuple[History, dict]:
    """Shard `model` over the process group, call `run(model, on_step)` (the workbook's train()) while counting
    every collective, and return (history, figures measured on this rank and computed from the shapes)."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    moved = shard_quantization_state(model)
    full_copy = frozen_and_trainable_bytes(list(model.parameters()), tensor_bytes)     # what DDP keeps on every rank
    units = shard(model, device)
    params = dict(model.named_parameters())
    log = CollectiveLog()
    probe = HeldParameters(model, units, world_size, log)

    def each_step(step: int) -> None:
        probe.on_step(step)
        if on_step is not None:
            on_step(step)
    with log:
        history = run(model, each_step)
    steps = len(history.steps)
    return history, {
        "units": {unit: len(names) for unit, names in units.items()}, "quantization_tensors_sharded": moved,
        "full_copy_bytes": full_copy,
        "piece_bytes": frozen_and_trainable_bytes(params.values(), tensor_bytes),
        "piece_bytes_expected": frozen_and_trainable_bytes(params.values(),
                                                           lambda p: piece_bytes(p, rank, world_size)),
        "buffer_bytes": sum(tensor_bytes(b) for b in model.buffers()),
        "collective_bytes_per_step": {k: v / steps for k, v in log.bytes_by_kind().items()},
        "collectives_per_step": {k: v / steps for k, v in log.counts_by_kind().items()},
        "collective_bytes_expected": expected_traffic(params, units, world_size),
        "unit_bytes": probe.whole, "held_during_step": probe.moments,
    }


def gather_adapter(model) -> dict[str, torch.Tensor]:
    """The adapter's tensors whole, keyed as on disk, on every rank. DTensor.full_tensor() is an all-gather:
    every rank must call it, for the same tensors in the same order."""
    return {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().cpu().clone()
            for k, v in get_peft_model_state_dict(model).items()}


def mean_over_ranks(values: list[float], device: torch.device) -> list[float]:
    """Each rank's per-step losses averaged over the ranks: with the token weighting of ShardedCollator, the
    loss of the whole batch, step by step. (`device`: where the backend reduces; nccl reduces on the GPU.)"""
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return (total / dist.get_world_size()).tolist()


def gather_objects(obj) -> list:
    """`obj` from every rank, in rank order (on every rank)."""
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
