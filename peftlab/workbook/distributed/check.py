"""`python -m peftlab.workbook.distributed --check`: does splitting each batch over 2 ranks change what is learned?

The same training runs twice, with the same seed, data order and hyperparameters:
  1. a torchrun job of 2 ranks (a subprocess), each with half of every batch;
  2. one process with the whole batch: the plain `train()` of the notebooks.
Their adapters must agree weight by weight up to float rounding (the halves' gradients are summed in
another order): the check passes when the largest |difference| is at most `--tolerance` (1e-5) while
training moved the weights by far more. It also checks the communication law: DDP all-reduced exactly
the trainable parameters' gradients each step (4 bytes each in fp32), for the adapter and for full
fine-tuning, so the ratio of the two is the ratio of their trainable parameters.
With --fsdp the 2 ranks shard the model instead (fsdp.py), and the check also compares the losses of every
step and the bytes each rank held and sent with what the shapes predict (fsdp_report.py).
Exit status: 0 all hold, 1 one does not, 2 the 2-rank job failed.
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file

from peftlab.hf_format import WEIGHTS_NAME, get_peft_model_state_dict
from peftlab.workbook.batching import PromptTargetCollator
from peftlab.workbook.data import load_task
from peftlab.workbook.training import train

from .fsdp_report import fsdp_figures, print_fsdp_report
from .runner import RUN_FILE, build_model

RANKS = 2


def torchrun_command(module_args: list[str], nproc: int = RANKS) -> list[str]:
    """`torchrun --standalone --nproc_per_node=N -m peftlab.workbook.distributed ARGS` with this Python."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "peftlab.workbook.distributed", *module_args]


def start_torchrun(module_args: list[str], nproc: int = RANKS) -> subprocess.Popen:
    """Start a job (its output captured); one thread per rank (torchrun would warn otherwise)."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen(torchrun_command(module_args, nproc), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def job_arguments(args, out: Path) -> list[str]:
    return ["--method", args.method, "--task", args.task, "--model", args.model, "--steps", str(args.steps),
            "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--seed", str(args.seed),
            "--device", args.device, "--timeout", str(args.timeout), "--out", str(out),
            *(["--fsdp", "--compare-ddp"] if args.fsdp else ["--compare-full-ft"])]


def adapter_weights(model, method: str) -> dict[str, torch.Tensor]:
    """What a run saves, keyed as on disk: the adapter, or the whole model for full fine-tuning."""
    if method == "full":
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(model).items()}


def saved_weights(folder: Path) -> dict[str, torch.Tensor]:
    adapter = folder / WEIGHTS_NAME
    return load_file(adapter if adapter.exists() else folder / "model.safetensors")


def one_process(args) -> tuple[dict, dict, list[float]]:
    """(initial weights, trained weights, losses) of the same run in this process, on the whole batch."""
    torch.set_num_threads(args.threads)
    transformers.utils.logging.disable_progress_bar()
    model, tokenizer = build_model(args.method, args.model, args.seed)
    initial = adapter_weights(model, args.method)
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    history = train(model, load_task(args.task)["train"], PromptTargetCollator(tokenizer), steps=args.steps,
                    lr=args.lr, batch_size=args.batch_size, seed=args.seed, device=device, progress=False)
    if args.keep:                                    # the one-process adapter too, for comparisons afterwards
        model.save_pretrained(Path(args.keep) / "one_process")
    return initial, adapter_weights(model, args.method), history.loss


def largest_difference(a: dict, b: dict) -> float:
    missing = set(a) ^ set(b)
    if missing:
        raise ValueError(f"The two runs saved different tensors: {sorted(missing)[:5]}")
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def run_check(args) -> int:
    with tempfile.TemporaryDirectory(prefix="peftlab-ddp-check-") as tmp:
        folder = Path(args.keep) / f"{RANKS}_ranks" if args.keep else Path(tmp)
        job = start_torchrun(job_arguments(args, folder))
        limit = max(300.0, 5 * args.timeout)
        try:
            initial, single, losses = one_process(args)      # meanwhile, while the ranks start up
            stdout, stderr = job.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            job.kill()
            stdout, stderr = job.communicate()
            print(stdout[-4000:] + stderr[-4000:], file=sys.stderr)
            print(f"check FAILED: the {RANKS}-rank job did not finish in {limit:g} s; stopped.", file=sys.stderr)
            return 2
        finally:
            if job.poll() is None:
                job.kill()
        if job.returncode != 0:
            print(stdout[-4000:] + stderr[-4000:], file=sys.stderr)
            print(f"check FAILED: the {RANKS}-rank job exited with status {job.returncode} (its output is above).",
                  file=sys.stderr)
            return 2
        run = json.loads((folder / RUN_FILE).read_text())
        distributed = saved_weights(folder)
    difference, moved = largest_difference(distributed, single), largest_difference(initial, single)
    if args.fsdp:
        report = fsdp_figures(run, difference, moved, losses, args.tolerance)
        print_fsdp_report(report)
    else:
        report = figures(run, difference, moved, args)
        print_report(report)
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=1) + "\n")
    return 0 if report["passed"] else 1


def figures(run: dict, difference: float, moved: float, args) -> dict:
    full = run["full_ft"]
    bytes_per_value = 4   # fp32 gradients
    report = {
        "method": run["method"], "task": run["task"], "steps": run["steps"], "global_batch": run["global_batch"],
        "ranks": run["world_size"], "backend": run["backend"],
        "max_abs_difference": difference, "tolerance": args.tolerance, "moved": moved,
        "equivalent": difference <= args.tolerance < moved,
        "trainable": run["trainable"], "full_ft_trainable": full["trainable"],
        "bytes_per_step": run["allreduce_bytes_per_step"], "full_ft_bytes_per_step": full["allreduce_bytes_per_step"],
        "bytes_ratio": run["allreduce_bytes_per_step"] / full["allreduce_bytes_per_step"],
        "bytes_law": (run["allreduce_bytes_per_step"] == bytes_per_value * run["trainable"]
                      and full["allreduce_bytes_per_step"] == bytes_per_value * full["trainable"]),
        "seconds_training": run["seconds"],
    }
    return report | {"passed": report["equivalent"] and report["bytes_law"]}


def print_report(r: dict) -> None:
    per_rank = r["global_batch"] // r["ranks"]
    print(f"{r['ranks']} ranks x {per_rank} rows ({r['backend']}) against 1 process x {r['global_batch']} rows: "
          f"{r['steps']} steps of {r['method']} on {r['task']}")
    print(f"  weights: largest |difference| {r['max_abs_difference']:.1e} (tolerance {r['tolerance']:.0e}); "
          f"training moved them by up to {r['moved']:.3f}")
    print(f"  all-reduced per step: {r['method']} {r['bytes_per_step']:,.0f} bytes, full fine-tuning "
          f"{r['full_ft_bytes_per_step']:,.0f} bytes; ratio {r['bytes_ratio']:.5f} = {r['trainable']:,} / "
          f"{r['full_ft_trainable']:,} trainable parameters")
    verdict = "passed" if r["equivalent"] and r["bytes_law"] else "FAILED"
    if not r["equivalent"]:
        verdict += " (the two runs' weights differ beyond the tolerance)"
    if not r["bytes_law"]:
        verdict += " (the bytes all-reduced are not 4 per trainable parameter)"
    print(f"check {verdict}")
