"""peftlab vs Hugging Face peft: what LoRA and DoRA cost to train and to run, on one model.

For each method the script starts a fresh Python process (same seeds, so the same base weights,
adapter init and batch in every process) and measures:
  - training step time: forward + backward + AdamW step, median of --steps timed steps after
    --warmup untimed ones (time.perf_counter; CUDA synchronized on GPU);
  - peak memory while training: on CUDA torch.cuda.max_memory_allocated (reset after the model is
    built and wrapped); on CPU the peak resident set size (VmHWM, reset the same way through
    /proc/self/clear_refs) minus the RSS right after the imports, i.e. model + training state,
    not the interpreter and its libraries. A process per method keeps one method's peak or
    allocator caches from leaking into the next;
  - inference latency of one forward pass over the batch (no grad, no KV cache), with the adapter
    unmerged and then merged (merge_and_unload), medians as above.
Methods: base (the plain model, inference only), full (full fine-tuning), peftlab-lora, peft-lora,
peftlab-dora, peft-dora. LoRA: r=16, alpha=32, dropout 0, all linear layers but the output head.
On CPU the workers use one torch thread (--threads): see the comment at that option.

    python benchmarks/lora_vs_peft.py --model bundled
    python benchmarks/lora_vs_peft.py --model 100m
    python benchmarks/lora_vs_peft.py --model 1b --device cuda        # bf16, batch 8 x 1024
"""
import argparse
import json
import platform
import re
import statistics
import subprocess
import sys
import time

METHODS = ("base", "full", "peftlab-lora", "peft-lora", "peftlab-dora", "peft-dora")

# arch: LlamaConfig fields (None: the bundled pico-llama-1m); batch x seq tokens; default step counts.
MODELS = {
    "bundled": dict(arch=None, batch=32, seq=64, steps=10, warmup=2),
    # ~110M parameters: 85M in the 12 blocks + 24.6M tied embeddings (GPT-2-small sized).
    # Batch 2 x 128 keeps a full fine-tuning step near 7 s on one shared CPU core.
    "100m": dict(arch=dict(hidden_size=768, num_hidden_layers=12, intermediate_size=2048,
                           num_attention_heads=12, num_key_value_heads=12, vocab_size=32000,
                           tie_word_embeddings=True), batch=2, seq=128, steps=3, warmup=1),
    # TinyLlama-1.1B's shape (untied embeddings, grouped-query attention): meant for --device cuda.
    "1b": dict(arch=dict(hidden_size=2048, num_hidden_layers=22, intermediate_size=5632,
                         num_attention_heads=32, num_key_value_heads=4, vocab_size=32000,
                         tie_word_embeddings=False), batch=8, seq=1024, steps=10, warmup=3),
}


# --- one method, in its own process ---------------------------------------------------------
def build_model(name: str, device, dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    spec = MODELS[name]
    torch.manual_seed(0)                       # same base weights in every process
    if spec["arch"] is None:
        from peftlab.workbook import load_base_model
        model = load_base_model(dtype=dtype)[0].to(device)
    else:
        config = LlamaConfig(max_position_embeddings=2048, **spec["arch"])
        with torch.device(device):             # initialise on the GPU: far faster for 1.1B weights
            model = LlamaForCausalLM(config).to(dtype)
    model.config.use_cache = False             # no KV cache: we time whole-batch forwards
    return model


def wrap(model, method: str):
    """The method's trainable model; adapters get the same seed in both libraries."""
    import torch
    if method in ("base", "full"):
        return model
    if method.startswith("peftlab"):
        from peftlab import LoraConfig, get_peft_model
    else:
        from peft import LoraConfig, get_peft_model
    torch.manual_seed(1)
    config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                        use_dora=method.endswith("dora"))
    return get_peft_model(model, config)


def timed(fn, steps: int, warmup: int, sync) -> list[float]:
    """Milliseconds of each of `steps` calls of fn, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def worker(args) -> None:
    import torch
    import transformers
    transformers.logging.set_verbosity_error()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    dtype = torch.bfloat16 if cuda else torch.float32
    if not cuda:
        torch.set_num_threads(args.threads)
    import peft  # noqa: E401,F401  both libraries before the baseline: neither pays for the other's import
    from heap import reset_rss_peak, rss_kib

    import peftlab  # noqa: F401

    rss_before = rss_kib("VmRSS")              # interpreter + torch/transformers/peft/peftlab

    spec = MODELS[args.model]
    model = build_model(args.model, device, dtype)
    batch = torch.randint(model.config.vocab_size, (spec["batch"], spec["seq"]),
                          generator=torch.Generator().manual_seed(2)).to(device)
    base_params = sum(p.numel() for p in model.parameters())
    model = wrap(model, args.method)
    out = dict(method=args.method, base_params=base_params,
               trainable=sum(p.numel() for p in model.parameters() if p.requires_grad))
    if args.method == "base":
        model.requires_grad_(False)
        out["trainable"] = 0

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    out["cpu_peak_reset"] = reset_rss_peak() if not cuda else None
    if args.method != "base":
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        losses = []

        def step():
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if not losses:
                losses.append(loss.item())     # loss of the very first step: same model, same batch?
        out["step_ms"] = timed(step, args.steps, args.warmup, sync)
        out["loss0"] = losses[0]
        out["peak_mib"] = [torch.cuda.max_memory_allocated() / 2**20 if cuda
                           else (rss_kib("VmHWM") - rss_before) / 1024]   # a list, like the timings
        del opt, step
    if args.method != "full":                  # full fine-tuning runs the base architecture
        model.eval()

        @torch.no_grad()
        def infer():
            model(input_ids=batch)
        out["infer_ms"] = timed(infer, args.steps, args.warmup, sync)
        if args.method != "base":
            model = model.merge_and_unload()
            out["merged_ms"] = timed(infer, args.steps, args.warmup, sync)
    print("RESULT " + json.dumps(out), flush=True)


# --- the driver --------------------------------------------------------------------------
def machine(args) -> str:
    import os

    import torch
    if args.device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    with open("/proc/cpuinfo") as f:
        names = re.findall(r"model name\s*:\s*(.+)", f.read())
    return (f"{names[0] if names else platform.processor()}, {os.cpu_count()} cores, "
            f"{args.threads} torch thread(s)")


def run_method(method: str, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--model", args.model,
           "--device", args.device, "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.exit(f"{method} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def pool(results: dict, method: str, out: dict) -> None:
    """Add one run's measurements (lists) to the method's pooled results; the runs must agree on
    everything that is not a measurement (parameters, first loss)."""
    if method not in results:
        results[method] = out
        return
    kept = results[method]
    # First losses agree to float noise (multi-threaded sums round differently from run to run).
    if abs(kept.get("loss0", 0) - out.get("loss0", 0)) > 1e-4 or kept["trainable"] != out["trainable"]:
        sys.exit(f"{method}: two rounds started from different weights or batches; the runs are not comparable.")
    for key, value in out.items():
        if isinstance(value, list):
            kept[key] = kept.get(key, []) + value


def med(r: dict | None, key: str):
    return statistics.median(r[key]) if r and key in r else None


def cell(values, fmt="{:.1f}") -> str:
    """'median [min-max]' of a list of timings, or '—'."""
    if not values:
        return "—"
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}–{fmt.format(max(values))}]"


def table(results: dict) -> str:
    rows = ["| method | trainable params | first loss | train step ms | peak train mem MiB "
            "| infer unmerged ms | infer merged ms |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for m, r in results.items():
        loss = f"{r['loss0']:.4f}" if "loss0" in r else "—"
        peak = cell(r.get("peak_mib"), "{:.0f}")
        rows.append(f"| {m} | {r['trainable']:,} | {loss} | {cell(r.get('step_ms'))} | {peak} "
                    f"| {cell(r.get('infer_ms'))} | {cell(r.get('merged_ms'))} |")
    return "\n".join(rows)


def ratio_lines(results: dict, cuda: bool) -> list[str]:
    """The issue's targets, peftlab's figures first; peft's ratio is shown beside for reference."""
    g = results.get
    mem_note = "" if cuda else " (GPU target; CPU RSS shown)"
    checks = [  # (label, numerator, denominator, target, peft's ratio for reference)
        ("peftlab-lora step / peft-lora step", med(g("peftlab-lora"), "step_ms"), med(g("peft-lora"), "step_ms"),
         1.0, None),
        ("peftlab-lora peak / peft-lora peak", med(g("peftlab-lora"), "peak_mib"), med(g("peft-lora"), "peak_mib"),
         1.0, None),
        ("peftlab-dora step / peft-dora step", med(g("peftlab-dora"), "step_ms"), med(g("peft-dora"), "step_ms"),
         1.0, None),
        ("peftlab-dora peak / peft-dora peak", med(g("peftlab-dora"), "peak_mib"), med(g("peft-dora"), "peak_mib"),
         1.0, None),
        ("peftlab-lora step / full step", med(g("peftlab-lora"), "step_ms"), med(g("full"), "step_ms"), 0.8,
         ("peft-lora", "step_ms", "full")),
        ("peftlab-lora peak / full peak" + mem_note, med(g("peftlab-lora"), "peak_mib"), med(g("full"), "peak_mib"),
         0.8, ("peft-lora", "peak_mib", "full")),
        # The base reference is the merged model of the same process: the base architecture exactly,
        # timed under the same allocator state. A process that never trained (the base row) pays
        # glibc's page faults on every forward (~30% on the bundled model), which flatters adapters.
        ("peftlab-lora unmerged inference / base (= merged, same process)", med(g("peftlab-lora"), "infer_ms"),
         med(g("peftlab-lora"), "merged_ms"), 1.25, ("peft-lora", "infer_ms", "peft-lora", "merged_ms")),
        ("peftlab-dora step / peftlab-lora step", med(g("peftlab-dora"), "step_ms"), med(g("peftlab-lora"), "step_ms"),
         1.3, ("peft-dora", "step_ms", "peft-lora")),
    ]
    lines = []
    for label, num, den, target, ref in checks:
        if num is None or not den:
            continue
        ratio = num / den
        line = f"- {label}: {ratio:.3f} (target <= {target:.2f}) {'PASS' if ratio <= target else 'MISS'}"
        if ref:
            a, key, b, key_b = ref if len(ref) == 4 else (*ref, ref[1])
            va, vb = med(g(a), key), med(g(b), key_b)
            if va is not None and vb:
                line += f"; peft: {va / vb:.3f}"
        lines.append(line)
    for m in ("peftlab-lora", "peft-lora", "peftlab-dora", "peft-dora"):   # no target: context only
        if med(g(m), "merged_ms") and med(g("base"), "infer_ms"):
            lines.append(f"- {m} merged / unmerged inference vs the base row's process (no target): "
                         f"{med(g(m), 'merged_ms') / med(g('base'), 'infer_ms'):.2f} / "
                         f"{med(g(m), 'infer_ms') / med(g('base'), 'infer_ms'):.2f}")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=MODELS, default="bundled")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda: bf16 weights, fp32 adapters)")
    p.add_argument("--steps", type=int, help="timed steps (default per model: bundled 10, 100m 3, 1b 10)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default: bundled 2, 100m 1, 1b 3)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    # One thread by default: on a shared 2-core machine, two threads stall on each other whenever
    # another process holds a core (steps measured here went from ~0.7 s to 1-8 s).
    p.add_argument("--threads", type=int, default=1, help="torch threads on CPU (default 1)")
    # Rounds run every method once each, in turn, so that a slow spell of a shared machine hits all
    # methods alike; timings and peaks of all rounds are pooled (median [min-max]).
    p.add_argument("--rounds", type=int, default=1, help="run every method this many times, interleaved")
    p.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)   # internal: one method
    args = p.parse_args()
    args.steps = args.steps or MODELS[args.model]["steps"]
    args.warmup = MODELS[args.model]["warmup"] if args.warmup is None else args.warmup
    if args.worker:
        args.method = args.worker
        return worker(args)

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(methods) - set(METHODS)
    if unknown:
        p.error(f"unknown methods {sorted(unknown)}; choose from {', '.join(METHODS)}")
    import peft  # noqa: E401
    import torch
    import transformers
    spec, cuda = MODELS[args.model], args.device.startswith("cuda")
    start, results = time.perf_counter(), {}
    for round_ in range(1, args.rounds + 1):
        for m in methods:
            print(f"round {round_}/{args.rounds}: {m} ...", file=sys.stderr, flush=True)
            pool(results, m, run_method(m, args))
    params = next(iter(results.values()))["base_params"]
    print(f"## {args.model} on {args.device}: {machine(args)}\n")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}; "
          f"{time.strftime('%Y-%m-%d')}")
    print(f"model: {params / 1e6:.1f}M parameters, {'bf16' if cuda else 'fp32'}; batch {spec['batch']} x "
          f"{spec['seq']} tokens; {args.steps} timed steps after {args.warmup} warmup, "
          f"{args.rounds} round(s) per method; "
          "LoRA r=16 alpha=32 all-linear, AdamW lr 1e-4")
    print("timings and peaks: median [min–max] over all rounds, ms; peak memory: " + (
        "torch.cuda.max_memory_allocated while training (weights included)" if cuda else
        "peak RSS while training minus RSS after imports, MiB (weights, grads, optimizer state, "
        "activations, allocator slack)"))
    if not cuda and not all(r.get("cpu_peak_reset", True) for r in results.values()):
        print("note: /proc/self/clear_refs was refused, so peaks include model building")
    print("\n" + table(results) + "\n")
    print("\n".join(ratio_lines(results, cuda)))
    print(f"\n(total wall time {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
