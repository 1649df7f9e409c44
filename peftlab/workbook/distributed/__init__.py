"""Data-parallel fine-tuning with torch.distributed: the workbook's `train()` loop on several processes.

    torchrun --standalone --nproc_per_node=2 -m peftlab.workbook.distributed --method lora --out adapters/ddp
    python -m peftlab.workbook.distributed --check   # 2 ranks against 1 process: same adapter? (`make test` runs it)
    accelerate launch --multi_gpu --num_processes 2 -m peftlab.workbook.distributed ...   # GPUs, with accelerate
    torchrun ... -m peftlab.workbook.distributed --fsdp --method qlora   # the model sharded, not copied (fsdp.py)
    python -m peftlab.workbook.distributed --fsdp --check                # the same check, sharded (tests run it)
    accelerate launch --config_file peftlab/workbook/distributed/accelerate_fsdp.yaml -m peftlab.workbook.distributed

Every rank (one process; one GPU each on a GPU machine) holds a whole copy of the model and trains on
its share of each batch. DistributedDataParallel (DDP; Li et al. 2020, *PyTorch Distributed*,
arXiv:2006.15704) all-reduces the gradients during the backward pass, so every rank takes the same
optimizer step from the same averaged gradient, as one process on the whole batch would. DDP gives
its hooks only to parameters that require grad: with a frozen base, only the adapter's gradients
travel, and the bytes all-reduced per step are the trainable fraction of full fine-tuning's.

    rank 0:  rows 0..B/2-1  -> forward, backward -\
                                                   all-reduce (average) of the trainable gradients
    rank 1:  rows B/2..B-1  -> forward, backward -/   -> the same AdamW step on every rank

Nothing in `train()` knows about this: it gets the DDP-wrapped model and a `ShardedCollator`.
The backend is gloo on CPUs and nccl on CUDA GPUs (`LOCAL_RANK` picks the GPU); the code is the same.
A rank that dies or stops answering ends the job with an error after `--timeout` seconds at the
latest (the process group's timeout), never a hang. The job: runner.py (one rank); the
`--check`: check.py; the command line: __main__.py. With `--fsdp`, each rank keeps only its piece of every
parameter instead of a copy (fsdp.py; what the check concludes: fsdp_report.py), and every collective's
bytes are counted as they pass (collectives.py).
"""
from pathlib import Path

from .runner import METHODS, RUN_FILE, ShardedCollator, build_model, lost_contact, parser, run_rank, save_on_rank_zero

ACCELERATE_FSDP_CONFIG = Path(__file__).with_name("accelerate_fsdp.yaml")   # `accelerate launch --config_file`

__all__ = ["ACCELERATE_FSDP_CONFIG", "METHODS", "RUN_FILE", "ShardedCollator", "build_model", "lost_contact", "parser",
           "run_rank", "save_on_rank_zero"]
