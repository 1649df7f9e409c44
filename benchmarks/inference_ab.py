"""peftlab vs peft inference with the adapter unmerged, measured A/B in one process.

Three copies of the same model (same seed, so the same weights): the plain base, one wrapped by
peftlab and one by peft (adapter unmerged). Each round runs one forward of each, in an order that
rotates from round to round, so that a slow spell of a shared machine hits all three alike. Per
round: peftlab / peft, peftlab / base and peft / base; `ab_summary` reports medians and intervals.
The LoRA B factors are given random values first (peft and peftlab initialise B to zero, and a zero
update could in principle be skipped), the same values in both libraries.

    python benchmarks/inference_ab.py --model 100m --method lora --rounds 20
"""
import statistics

from ab_summary import cpu_clock, summarise, timing_arguments
from lora_vs_peft import MODELS, build_model, wrap


def main() -> None:
    args = timing_arguments(__doc__, "--rounds", 20, "timed forwards per model").parse_args()
    clock = cpu_clock(args)

    import torch
    import transformers
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    spec = MODELS[args.model]
    names = ("base", "peftlab", "peft")
    models = {"base": build_model(args.model, torch.device("cpu"), torch.float32)}
    for lib in names[1:]:
        models[lib] = wrap(build_model(args.model, torch.device("cpu"), torch.float32), f"{lib}-{args.method}")
        torch.manual_seed(3)   # the same nonzero B in both libraries: parameters come in the same order
        with torch.no_grad():
            for name, param in models[lib].named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.02)
    for m in models.values():
        m.eval()
    batch = torch.randint(models["base"].config.vocab_size, (spec["batch"], spec["seq"]),
                          generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        outputs = {name: m(input_ids=batch).logits for name, m in models.items()}
    if not torch.allclose(outputs["peftlab"], outputs["peft"], atol=1e-4):
        raise SystemExit("peftlab and peft disagree on the adapted logits: the two models are not the same model")
    if torch.allclose(outputs["peftlab"], outputs["base"], atol=1e-4):
        raise SystemExit("the adapter changes nothing: B was not set, so this would time a no-op update")

    @torch.no_grad()
    def forward(name: str) -> float:
        start = clock()
        models[name](input_ids=batch)
        return (clock() - start) * 1e3

    for _ in range(args.warmup):
        for name in names:
            forward(name)
    times = {name: [] for name in names}
    for i in range(args.rounds):
        order = names[i % 3:] + names[:i % 3]
        for name in (order if (i // 3) % 2 == 0 else order[::-1]):
            times[name].append(forward(name))
    medians = ", ".join(f"{n} {statistics.median(t):.1f} ms" for n, t in times.items())
    print(f"{args.model}, {args.method} unmerged, {args.threads} thread(s), {args.clock} clock, "
          f"{args.rounds} rounds after {args.warmup} warmup; medians: {medians}")
    print(f"- {summarise('peftlab / peft', times['peftlab'], times['peft'])}")
    print(f"- {summarise('peftlab / base', times['peftlab'], times['base'])}")
    print(f"- {summarise('peft / base', times['peft'], times['base'])}")


if __name__ == "__main__":
    main()
