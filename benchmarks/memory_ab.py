"""peftlab vs peft peak training memory, measured A/B in alternating processes.

Peak memory is a property of a whole process, so each measurement is a fresh process that builds
the model, wraps it with one library, and trains. Processes alternate (peftlab, peft, peft,
peftlab, ...) and each pair gives one ratio peftlab / peft; `ab_summary` reports the median and an
interval. Two measures (see heap.py): peak RSS, what the machine sees, and peak heap in use, the
tensors without the allocator's slack. Both libraries are imported before the baseline in every
process, so neither pays for the other's import.

    python benchmarks/memory_ab.py --model 100m --method lora --pairs 8
"""
import argparse
import json
import statistics
import subprocess
import sys

from ab_summary import summarise
from lora_vs_peft import MODELS, build_model, wrap


def worker(args) -> None:
    import torch
    import transformers
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    import peft  # noqa: F401  both libraries before the baseline
    from heap import heap_in_use, reset_rss_peak, rss_kib, step_heap_peak

    import peftlab  # noqa: F401

    rss_before, heap_before = rss_kib(), heap_in_use()
    spec = MODELS[args.model]
    model = wrap(build_model(args.model, torch.device("cpu"), torch.float32), f"{args.lib}-{args.method}")
    batch = torch.randint(model.config.vocab_size, (spec["batch"], spec["seq"]),
                          generator=torch.Generator().manual_seed(2))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        model(input_ids=batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    reset_rss_peak()
    for _ in range(args.steps):
        step()
    rss_peak = (rss_kib("VmHWM") - rss_before) / 1024
    # One more step, watched op by op (AdamW's state exists by now): weights, gradients, optimizer
    # state and activations, without the allocator's slack.
    heap_peak = (step_heap_peak(step) - heap_before) / 2**20
    print("RESULT " + json.dumps({"rss_mib": rss_peak, "heap_mib": heap_peak}), flush=True)


def spread(values) -> str:
    return f"{statistics.median(values):.1f} [{min(values):.1f}-{max(values):.1f}]"


def measure(lib: str, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", lib, "--model", args.model, "--method", args.method,
           "--steps", str(args.steps), "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.exit(f"{lib} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=[m for m in MODELS if m != "1b"], default="bundled")
    p.add_argument("--method", choices=["lora", "dora"], default="lora")
    p.add_argument("--pairs", type=int, default=6)
    p.add_argument("--steps", type=int, default=3, help="training steps per process before the watched one")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--worker", choices=["peftlab", "peft"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.lib = args.worker
        return worker(args)
    runs = {"peftlab": [], "peft": []}
    for i in range(args.pairs):
        for lib in (("peftlab", "peft") if i % 2 == 0 else ("peft", "peftlab")):
            runs[lib].append(measure(lib, args))
            print(f"pair {i + 1}/{args.pairs} {lib}: {runs[lib][-1]}", file=sys.stderr, flush=True)
    print(f"{args.model}, {args.method}, {args.threads} thread(s), {args.steps} steps per process")
    for key, label in (("rss_mib", "peak RSS"), ("heap_mib", "peak heap in use")):
        a, b = [r[key] for r in runs["peftlab"]], [r[key] for r in runs["peft"]]
        print(f"- {label}, MiB, median [min-max]: peftlab {spread(a)}, peft {spread(b)}")
        print(f"  {summarise(f'peftlab / peft {label}', a, b)}")


if __name__ == "__main__":
    main()
