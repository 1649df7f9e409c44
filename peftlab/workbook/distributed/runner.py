"""Data-parallel fine-tuning with torch.distributed: one rank of a job, DDP around the workbook's `train()`.

The picture, the commands and the references: this package's docstring (peftlab/workbook/distributed/__init__.py)."""
import argparse
import inspect
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import transformers
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

from peftlab.hf_format import set_peft_model_state_dict
from peftlab.model import get_peft_model
from peftlab.nf4 import quantize_model
from peftlab.tuners import IA3Config, LoHaConfig, LoKrConfig, LoraConfig, VeraConfig
from peftlab.workbook.batching import IGNORE_INDEX, PromptTargetCollator
from peftlab.workbook.data import load_task
from peftlab.workbook.memory import parameter_counts
from peftlab.workbook.runtime import seed_everything
from peftlab.workbook.training import train
from peftlab.workbook.zoo import BASE_MODEL, load_base_model

from .fsdp import gather_adapter, gather_objects, mean_over_ranks, train_sharded

ATTENTION = ["q_proj", "v_proj"]
# One small configuration per layer method; "full" trains every parameter (the comparison). QUANTIZED methods
# train on a base whose linear layers are NF4 with double quantization (peftlab/nf4.py, notebook 11).
METHODS = {
    "lora": lambda: LoraConfig(r=4, lora_alpha=8, target_modules=ATTENTION),
    "qlora": lambda: LoraConfig(r=4, lora_alpha=8, target_modules=ATTENTION),    # on an NF4 base (below)
    "dora": lambda: LoraConfig(r=4, lora_alpha=8, target_modules=ATTENTION, use_dora=True),
    "loha": lambda: LoHaConfig(r=4, alpha=8, target_modules=ATTENTION),
    "lokr": lambda: LoKrConfig(r=4, alpha=8, target_modules=ATTENTION),
    "vera": lambda: VeraConfig(r=64, target_modules=ATTENTION),
    "ia3": lambda: IA3Config(),
    "full": None,
}
# These models keep no running statistics (no BatchNorm): their buffers (rotary tables) are equal on every
# rank, so DDP need not re-send them before each forward; the only traffic per step is then the gradients.
# (torch 2.13 renamed the option; DDP still syncs parameters and buffers once, when it wraps the model.)
NO_BUFFER_SYNC_PER_STEP = ({"forward_sync_buffers": False}
                           if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                           else {"broadcast_buffers": False})
QUANTIZED = {"qlora"}
RUN_FILE = "distributed_run.json"   # written by rank 0 next to the adapter: what the run measured


def build_model(method: str, model_name: str = BASE_MODEL, seed: int = 0):
    """(model, tokenizer): the base model with `method`'s adapter, or all of it trainable for "full"."""
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose one of {', '.join(METHODS)}.")
    seed_everything(seed)                    # every rank initialises the adapter identically
    model, tokenizer = load_base_model(model_name)
    if method in QUANTIZED:
        quantize_model(model)                # deterministic: every rank holds the same 4-bit base
    if method == "full":
        return model.requires_grad_(True), tokenizer
    return get_peft_model(model, METHODS[method]()), tokenizer


class ShardedCollator:
    """Collate the whole (global) batch, keep this rank's rows, and weight the loss per token.

    Every rank draws the same global batch (train() shuffles with the same seed everywhere) and keeps
    its contiguous block of rows, padded exactly as the whole batch is. A causal LM's loss is a mean
    over the target tokens of the batch; rows have different numbers of target tokens, so the mean of
    the ranks' means is not the mean of the whole batch. `num_items_in_batch` (transformers' losses
    then divide their sum by it) set to N / W, N the target tokens of the global batch and W the number
    of ranks, makes DDP's average over ranks exactly the whole batch's loss: with S_r the sum of the
    token losses on rank r, (1/W) * sum_r S_r / (N / W) = sum_r S_r / N.
    (At scale, a DistributedSampler gives each rank only its own rows; the weighting stays the same.)
    """

    def __init__(self, collate, rank: int, world_size: int):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}.")
        self.collate, self.rank, self.world_size = collate, rank, world_size

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        if len(rows) % self.world_size:
            raise ValueError(f"A batch of {len(rows)} rows does not split over {self.world_size} ranks: "
                             f"choose a batch size that is a multiple of the number of ranks.")
        batch = self.collate(rows)
        per_rank = len(rows) // self.world_size
        tokens = (batch["labels"][:, 1:] != IGNORE_INDEX).sum()          # the loss predicts token t+1 from t
        rows_here = slice(self.rank * per_rank, (self.rank + 1) * per_rank)
        shard = {k: v[rows_here] for k, v in batch.items()}
        return shard | {"num_items_in_batch": tokens.float() / self.world_size}


class AllReduceCounter:
    """A DDP communication hook: all-reduce each gradient bucket as DDP does by default, and count its
    bytes. `ddp.register_comm_hook(counter, AllReduceCounter.hook)`."""

    def __init__(self):
        self.bytes, self.buckets = 0, 0

    @staticmethod
    def hook(counter: "AllReduceCounter", bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
        counter.bytes += bucket.buffer().numel() * bucket.buffer().element_size()
        counter.buckets += 1
        return default_hooks.allreduce_hook(None, bucket)   # None: the default process group


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(device: str, timeout_s: float) -> tuple[int, int, torch.device]:
    """Join the process group that torchrun (or accelerate) describes in RANK / WORLD_SIZE / LOCAL_RANK;
    started without a launcher, be a job of one rank. Returns (rank, world_size, device)."""
    launched = "RANK" in os.environ
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if cuda:
        if torch.cuda.device_count() <= local_rank:
            raise RuntimeError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s): "
                               "start at most one process per GPU (--nproc_per_node).")
        torch.cuda.set_device(local_rank)
    alone = {} if launched else {"init_method": f"tcp://127.0.0.1:{free_port()}", "rank": 0, "world_size": 1}
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout_s), **alone)
    return rank, world_size, torch.device(f"cuda:{local_rank}" if cuda else "cpu")


def failure_drill(rank: int, args) -> Callable[[int], None] | None:
    """on_step hook that makes rank `--fail-rank` exit or hang at `--fail-step` (tests, and trying it)."""
    if args.fail_rank != rank:
        return None

    def on_step(step: int) -> None:
        if step == args.fail_step:
            print(f"[rank {rank}] failure drill: {args.fail_mode} at step {step}", file=sys.stderr, flush=True)
            if args.fail_mode == "exit":
                os._exit(3)                     # dies at once, as a killed process does
            time.sleep(10 * args.timeout + 60)  # stops answering; the other ranks' timeout must end the job
    return on_step


def save_on_rank_zero(model, out: Path, rank: int, summary: dict) -> bool:
    """Rank 0 alone writes the adapter (peft's format) and the run's figures; other ranks hold the same
    weights and write nothing, so there is no race on the folder. Returns whether this rank wrote."""
    if rank != 0:
        return False
    model.save_pretrained(out)
    (Path(out) / RUN_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    return True


# How gloo and nccl report a peer that died (its socket closed) or stopped answering (the timeout).
PEER_FAILURES = ("Connection closed by peer", "Connection reset by peer", "Timed out", "timed out", "NCCL error")


def lost_contact(error: RuntimeError) -> bool:
    """Whether `error` is a collective that failed because another rank died or hung (DDP re-raises
    the backend's error as a plain RuntimeError)."""
    return isinstance(error, dist.DistError) or any(s in str(error) for s in PEER_FAILURES)


def run_rank(args) -> dict:
    """Train on this rank's share of every batch (DDP, or FSDP with --fsdp); rank 0 saves. Returns the run's figures."""
    if args.fsdp and args.method == "full":
        raise ValueError("--fsdp trains an adapter here (its saving gathers the adapter's tensors); choose a layer "
                         "method, e.g. --method lora or --method qlora.")
    rank, world_size, device = init_distributed(args.device, args.timeout)
    torch.set_num_threads(args.threads)
    transformers.utils.logging.disable_progress_bar()   # one "Loading weights" bar per rank is noise
    trainer = train_fsdp if args.fsdp else train_ddp
    try:
        model, summary = trainer(args, rank, world_size, device, args.method, args.steps, failure_drill(rank, args))
        if args.compare_full_ft and args.method != "full":
            _, full = train_ddp(args, rank, world_size, device, "full", 1, None)    # one step: its bytes
            summary["full_ft"] = {k: full[k] for k in ("trainable", "allreduce_bytes_per_step")}
        if args.fsdp and args.compare_ddp:
            _, ddp = train_ddp(args, rank, world_size, device, args.method, 1, None)   # the same method, one step
            summary["ddp"] = {"allreduce_bytes_per_step": ddp["allreduce_bytes_per_step"]}
        if args.fsdp:
            model = gathered_copy(args, model, rank)
    except RuntimeError as error:
        if not lost_contact(error):
            raise
        lines = str(error).strip().splitlines() or ["(no detail)"]
        print(f"[rank {rank}] peftlab.workbook.distributed: lost contact with another rank ({lines[0][:200]}). "
              f"A data-parallel step needs every rank, so the job stops (process-group timeout "
              f"{args.timeout:g} s).", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    summary |= {"world_size": world_size, "backend": dist.get_backend(), "device": device.type}
    if args.out:
        save_on_rank_zero(model, Path(args.out), rank, summary)
    dist.destroy_process_group()
    return summary


def gathered_copy(args, model, rank: int):
    """On rank 0, an unsharded copy of the model holding the adapter gathered from every rank (what one
    process would save: a plain peft folder); elsewhere None. Every rank takes part in the gathering."""
    adapter = gather_adapter(model)
    if rank != 0:
        return None
    copy, _ = build_model(args.method, args.model, args.seed)
    set_peft_model_state_dict(copy, adapter)
    return copy


def train_fsdp(args, rank: int, world_size: int, device: torch.device, method: str, steps: int,
               on_step: Callable[[int], None] | None) -> tuple[torch.nn.Module, dict]:
    """(model, figures) after `steps` steps of `method` with the decoder blocks sharded by fully_shard (fsdp.py):
    the losses of the whole batch, and per rank the bytes held and the bytes of every collective."""
    model, tokenizer = build_model(method, args.model, args.seed)
    counts = parameter_counts(model)                 # before sharding: a DTensor forgets a packed weight's count
    model.to(device)
    collate = ShardedCollator(PromptTargetCollator(tokenizer), rank, world_size)

    def run(sharded, step_hook):
        return train(sharded, load_task(args.task)["train"], collate, steps=steps, lr=args.lr,
                     batch_size=args.batch_size, seed=args.seed, device=device, on_step=step_hook,
                     progress=args.progress and rank == 0, desc=f"{method} on {world_size} rank(s), FSDP")
    history, figures = train_sharded(model, device, run, on_step)
    per_rank = gather_objects({k: figures[k] for k in ("piece_bytes", "piece_bytes_expected", "held_during_step")})
    losses = mean_over_ranks(history.loss, device)
    return model, {"method": method, "task": args.task, "steps": steps, "global_batch": args.batch_size,
                   "trainable": counts["trainable"], "total": counts["total"], "fsdp": True,
                   "losses": losses, "last_loss": losses[-1], "seconds": history.seconds,
                   **{k: v for k, v in figures.items() if k not in per_rank[0]}, "per_rank": per_rank}


def train_ddp(args, rank: int, world_size: int, device: torch.device, method: str, steps: int,
              on_step: Callable[[int], None] | None) -> tuple[torch.nn.Module, dict]:
    """(model, figures) after `steps` steps of `method` under DDP, the all-reduced bytes counted."""
    model, tokenizer = build_model(method, args.model, args.seed)
    counts = parameter_counts(model)
    model.to(device)
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                  **NO_BUFFER_SYNC_PER_STEP)
    counter = AllReduceCounter()
    ddp.register_comm_hook(counter, AllReduceCounter.hook)
    collate = ShardedCollator(PromptTargetCollator(tokenizer), rank, world_size)
    history = train(ddp, load_task(args.task)["train"], collate, steps=steps, lr=args.lr,
                    batch_size=args.batch_size, seed=args.seed, device=device, on_step=on_step,
                    progress=args.progress and rank == 0, desc=f"{method} on {world_size} rank(s)")
    return model, {"method": method, "task": args.task, "steps": steps, "global_batch": args.batch_size,
                   "trainable": counts["trainable"], "total": counts["total"],
                   "allreduce_bytes_per_step": counter.bytes / steps, "buckets_per_step": counter.buckets / steps,
                   "seconds": history.seconds, "last_loss": history.loss[-1]}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m peftlab.workbook.distributed", description=__doc__.split("\n\n")[0])
    p.add_argument("--method", default="lora", choices=list(METHODS), help="layer method, or full fine-tuning")
    p.add_argument("--task", default="capitals", help="bundled task (default: capitals, answers of 1-2 tokens)")
    p.add_argument("--model", default=BASE_MODEL, help="bundled model or hub id (see zoo.load_base_model)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=16, help="global batch: split evenly over the ranks")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="folder for the adapter (rank 0 writes it)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: cuda when present")
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds a rank waits for the others before failing")
    p.add_argument("--compare-full-ft", action="store_true", help="also measure one step of full fine-tuning")
    p.add_argument("--fsdp", action="store_true", help="shard the decoder blocks with FSDP2 (fully_shard), not DDP")
    p.add_argument("--compare-ddp", action="store_true", help="--fsdp: also measure one DDP step of the same method")
    p.add_argument("--progress", action="store_true", help="a progress bar on rank 0")
    p.add_argument("--check", action="store_true", help="2 ranks against 1 process: same adapter? exit 1 if not "
                   "(with --fsdp: same losses and adapter, and the bytes held and sent)")
    p.add_argument("--tolerance", type=float, default=1e-5, help="--check: largest allowed |difference|")
    p.add_argument("--report", help="--check: also write its figures to this JSON file")
    p.add_argument("--keep", help="--check: keep both adapters in this folder (2_ranks/ and one_process/)")
    drill = p.add_argument_group("failure drill", "make one rank fail, to see (and test) how the job ends")
    drill.add_argument("--fail-rank", type=int)
    drill.add_argument("--fail-step", type=int, default=2)
    drill.add_argument("--fail-mode", choices=["exit", "hang"], default="exit")
    return p
