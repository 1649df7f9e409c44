"""The measuring tools of benchmarks/ (the benchmarks themselves are run by hand: see benchmarks/README.md)."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from ab_summary import summarise  # noqa: E402
from heap import heap_in_use, step_heap_peak  # noqa: E402


def test_ratio_summary_names_a_side_only_when_its_interval_excludes_one():
    behind = summarise("x", [1.10, 1.12, 1.09, 1.11], [1.0] * 4)
    assert behind.verdict == "behind" and behind.low > 1.0 and behind.median == pytest.approx(1.105)
    ahead = summarise("x", [0.90, 0.92, 0.91], [1.0, 1.0, 1.0])
    assert ahead.verdict == "ahead" and ahead.high < 1.0
    noise = summarise("x", [0.8, 1.2, 1.0, 0.9, 1.1], [1.0] * 5)
    assert noise.verdict == "no detectable difference with 5 pairs" and noise.low < 1.0 < noise.high
    assert "5 pairs" in str(noise) and "[" in str(noise)


def test_ratio_summary_refuses_unpaired_or_nonpositive_costs():
    with pytest.raises(ValueError, match="pairs need one of each"):
        summarise("x", [1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="positive costs"):
        summarise("x", [1.0, 2.0], [1.0, 0.0])


def test_heap_peak_sees_a_transient_tensor_and_its_release():
    size = 64 * 2**20

    def step():
        t = torch.ones(size // 4)   # 64 MiB of float32, alive only inside the step
        t.mul_(2)

    before = heap_in_use()
    peak = step_heap_peak(step)
    assert peak - before >= size                   # the transient block was seen
    assert heap_in_use() - before < size // 4      # and handed back
