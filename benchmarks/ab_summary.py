"""The per-pair ratio of an A/B measurement, summarised the way the course compares methods.

Each pair is one measurement of peftlab and one of peft taken back to back (or in alternating
processes), so a slow spell of a shared machine hits both. The summary is the median of the
per-pair ratios and a 95% interval of their mean (Student's t, through the course's `compare`
against a ratio of exactly 1). "behind" means the whole interval lies above 1.00, "ahead" below.
"""
import argparse
import statistics
import time
from dataclasses import dataclass

from peftlab.workbook.stats import compare


@dataclass(frozen=True)
class RatioSummary:
    label: str
    ratios: tuple[float, ...]
    median: float
    low: float
    high: float

    @property
    def verdict(self) -> str:
        if self.high < 1.0:
            return "ahead"
        if self.low > 1.0:
            return "behind"
        return f"no detectable difference with {len(self.ratios)} pairs"

    def __str__(self) -> str:
        return (f"{self.label}: median {self.median:.4f}, 95% CI of the mean [{self.low:.4f}, {self.high:.4f}], "
                f"{len(self.ratios)} pairs: {self.verdict}")


def summarise(label: str, numerators, denominators) -> RatioSummary:
    """Ratios numerator_i / denominator_i of paired measurements (lower is better for both)."""
    nums, dens = list(numerators), list(denominators)
    if len(nums) != len(dens):
        raise ValueError(f"{label}: {len(nums)} numerators but {len(dens)} denominators; pairs need one of each")
    if any(d <= 0 for d in dens):
        raise ValueError(f"{label}: a denominator is zero or negative; a ratio of costs needs positive costs")
    ratios = [a / b for a, b in zip(nums, dens)]
    c = compare(ratios, [1.0] * len(ratios), names=("ratio", "1"))
    return RatioSummary(label, tuple(ratios), statistics.median(ratios), 1.0 + c.low, 1.0 + c.high)


def timing_arguments(doc: str, count: str, default: int, help: str) -> argparse.ArgumentParser:
    """The options the timed A/B scripts share; `count` names how many timed repetitions (--pairs, --rounds)."""
    from lora_vs_peft import MODELS
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--model", choices=[m for m in MODELS if m != "1b"], default="bundled")
    p.add_argument("--method", choices=["lora", "dora"], default="lora")
    p.add_argument(count, type=int, default=default, help=help)
    p.add_argument("--warmup", type=int, default=2, help="untimed repetitions first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="cpu: this thread's CPU time (needs --threads 1); steadier on a busy machine")
    return p


def cpu_clock(args):
    """The clock an A/B benchmark reads. Wall time is what a user waits; on a machine other work
    shares, this thread's CPU time is steadier, and it is the whole cost only with one torch thread."""
    if args.clock == "wall":
        return time.perf_counter
    if args.threads != 1:
        raise SystemExit("--clock cpu measures this thread's CPU time, which misses the other threads' work: "
                         "add --threads 1")
    return time.thread_time
