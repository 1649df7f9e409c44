"""Notebook 07's comparison: bottleneck adapters, (IA)^3, BitFit and LayerNorm tuning against LoRA
and full fine-tuning, by one protocol (experiments/protocol.py).

Base model pico-gpt2-1m (it has the bias terms BitFit needs; Llama-style models have none), the
sentiment task, 300 steps of 16 examples (a budget where the methods differ: see the notebook),
each method's learning rate picked from a grid of 3 or 4 values on 200 validation reviews, 3 seeds,
accuracy on 500 test reviews. Then the Pfeiffer adapter at four bottleneck sizes, each at its own rate.

    python -m peftlab.course.experiments.nb07_adapters          # writes results/nb07_adapters.json
"""
from peftlab.tuners import BitFitConfig, BottleneckConfig, IA3Config, LNTuningConfig, LoraConfig

from .protocol import Method, compare, run_and_save

SETTINGS = dict(base_name="pico-gpt2-1m", task_name="sentiment", steps=300, batch_size=16, seeds=(0, 1, 2))
# Each grid brackets the method's best rate: a first pass with one grid for every adapter picked rates at
# its edges, so the grids were moved there (a rate chosen at the edge of its grid says the grid was wrong);
# a second pass (3 seeds) picked the top rate for Houlsby, Pfeiffer and BitFit, so their grids grew by one.
METHODS = {
    "full fine-tuning": Method(None, (1e-4, 3e-4, 1e-3)),
    "LoRA r=8": Method(lambda: LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn"]), (1e-3, 3e-3, 1e-2)),
    "(IA)³": Method(lambda: IA3Config(), (1e-1, 3e-1, 1.0)),
    "Houlsby adapters": Method(lambda: BottleneckConfig(mh_adapter=True, reduction_factor=16),
                               (3e-3, 1e-2, 3e-2, 1e-1)),
    "Pfeiffer adapter": Method(lambda: BottleneckConfig(reduction_factor=16), (3e-3, 1e-2, 3e-2, 1e-1)),
    "parallel adapter": Method(lambda: BottleneckConfig(is_parallel=True, reduction_factor=16, scaling=4.0),
                               (3e-4, 1e-3, 3e-3)),
    "BitFit": Method(lambda: BitFitConfig(), (3e-2, 1e-1, 3e-1, 1.0)),
    "LayerNorm tuning": Method(lambda: LNTuningConfig(), (1e-2, 3e-2, 1e-1)),
}
REDUCTION_FACTORS = (64, 16, 4, 1)   # bottleneck widths 2, 8, 32, 128 for the 128-wide model


# Each width gets its own rate from the Pfeiffer adapter's grid: a wider bottleneck may want a smaller rate.
SIZES = {f"m={128 // f}": Method(lambda f=f: BottleneckConfig(reduction_factor=f), METHODS["Pfeiffer adapter"].lrs)
         for f in REDUCTION_FACTORS}


def run() -> dict:
    results = compare(METHODS, **SETTINGS)
    results["bottleneck_sizes"] = compare(SIZES, **SETTINGS)["rows"]
    return results


def main() -> None:
    # One thread: the notebook re-runs seed 0 on one thread too, and then gets the stored numbers exactly.
    run_and_save("nb07_adapters", run, threads=1)


if __name__ == "__main__":
    main()
