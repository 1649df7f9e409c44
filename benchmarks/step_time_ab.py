"""peftlab vs peft training step time, measured A/B in one process.

lora_vs_peft.py times each method in its own process, one after the other, which is right for
peak memory but lets a slow spell of a shared machine land on one method and not the other. Here
both libraries adapt two identical copies of the model in one process, and training steps
alternate between them (peftlab, peft, peft, peftlab, ...), so that any slowdown hits both alike.
The result is the median of the per-pair ratios peftlab / peft and a 95% interval (ab_summary.py).

    python benchmarks/step_time_ab.py --model 100m --method lora --pairs 16
    python benchmarks/step_time_ab.py --model bundled --method dora --pairs 40
"""
import statistics

from ab_summary import cpu_clock, summarise, timing_arguments
from lora_vs_peft import MODELS, build_model, wrap


def main() -> None:
    args = timing_arguments(__doc__, "--pairs", 20, "timed steps per library").parse_args()
    clock = cpu_clock(args)

    import torch
    import transformers
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    spec = MODELS[args.model]
    libs = ("peftlab", "peft")
    models = {lib: wrap(build_model(args.model, torch.device("cpu"), torch.float32), f"{lib}-{args.method}")
              for lib in libs}
    batch = torch.randint(models["peft"].config.vocab_size, (spec["batch"], spec["seq"]),
                          generator=torch.Generator().manual_seed(2))
    optimizers = {lib: torch.optim.AdamW([q for q in m.parameters() if q.requires_grad], lr=1e-4)
                  for lib, m in models.items()}

    def step(lib: str) -> float:
        start = clock()
        models[lib].train()
        models[lib](input_ids=batch, labels=batch).loss.backward()
        optimizers[lib].step()
        optimizers[lib].zero_grad(set_to_none=True)
        return (clock() - start) * 1e3

    for _ in range(args.warmup):
        for lib in libs:
            step(lib)
    times = {lib: [] for lib in libs}
    for i in range(args.pairs):
        for lib in (libs if i % 2 == 0 else libs[::-1]):   # who goes first alternates too
            times[lib].append(step(lib))
    print(f"{args.model}, {args.method}, {args.threads} thread(s), {args.clock} clock, {args.pairs} pairs after "
          f"{args.warmup} warmup: peftlab {statistics.median(times['peftlab']):.1f} ms, "
          f"peft {statistics.median(times['peft']):.1f} ms per step (medians)")
    print(f"- {summarise('peftlab / peft step', times['peftlab'], times['peft'])}")


if __name__ == "__main__":
    main()
