"""peftlab.workbook.stats against scipy.stats, which serves as the oracle here only (the module itself
uses the standard library): t quantiles, Student's paired interval, Welch's interval; then the
verdicts, win counts, the zero-spread case, the error messages, and the grouping of `rank`."""
import math
import random

import pytest
from scipy import stats

from peftlab.workbook.stats import Comparison, compare, format_rank, rank, t_quantile

CONFIDENCES = (0.8, 0.9, 0.95, 0.99)
RTOL = 1e-9


def close(x: float, y: float) -> bool:
    return math.isclose(x, y, rel_tol=RTOL, abs_tol=1e-12)


def scores(rng: random.Random, n: int, centre: float, spread: float) -> list[float]:
    return [rng.gauss(centre, spread) for _ in range(n)]


# --- t quantiles ----------------------------------------------------------------------------

@pytest.mark.parametrize("confidence", CONFIDENCES)
def test_t_quantile_matches_scipy_for_integer_df(confidence):
    upper, lower = (1 + confidence) / 2, (1 - confidence) / 2
    for df in range(1, 201):
        assert close(t_quantile(upper, df), stats.t.ppf(upper, df)), df
        assert close(t_quantile(lower, df), stats.t.ppf(lower, df)), df


@pytest.mark.parametrize("confidence", CONFIDENCES)
def test_t_quantile_matches_scipy_for_fractional_welch_df(confidence):
    p = (1 + confidence) / 2
    for df in (1.0001, 1.3, 1.5, 2.7, 3.14159, 4.56, 7.9, 17.25, 33.3, 123.9, 199.99):
        assert close(t_quantile(p, df), stats.t.ppf(p, df)), df


def test_t_quantile_is_symmetric_and_zero_at_the_median():
    assert t_quantile(0.5, 3) == 0.0
    for df in (1, 2.5, 10):
        for p in (0.0625, 0.25):  # p and 1 - p both exact in binary
            assert t_quantile(p, df) == -t_quantile(1 - p, df)
    assert close(t_quantile(0.975, 2), 4.302652729911275)  # the textbook value for 3 seeds


@pytest.mark.parametrize("p, df", [(0.0, 3), (1.0, 3), (-0.1, 3), (0.9, 0), (0.9, -2), (0.9, math.nan),
                                   (0.9, math.inf)])
def test_t_quantile_rejects_invalid_arguments(p, df):
    with pytest.raises(ValueError):
        t_quantile(p, df)


# --- the intervals --------------------------------------------------------------------------

@pytest.mark.parametrize("confidence", CONFIDENCES)
def test_paired_interval_matches_scipy_ttest_rel(confidence):
    rng = random.Random(0)
    for n in (2, 3, 4, 5, 8, 20):
        a = scores(rng, n, 0.80, 0.03)
        b = [x + rng.gauss(-0.01, 0.02) for x in a]
        result = compare(a, b, confidence=confidence)
        expected = stats.ttest_rel(a, b).confidence_interval(confidence_level=confidence)
        assert close(result.low, expected.low) and close(result.high, expected.high), n
        assert result.paired and result.df == n - 1 and result.n_a == result.n_b == n
        assert close(result.difference, sum(a) / n - sum(b) / n)
        assert close(result.mean_a, sum(a) / n) and close(result.mean_b, sum(b) / n)


@pytest.mark.parametrize("confidence", CONFIDENCES)
def test_welch_interval_matches_scipy_ttest_ind(confidence):
    rng = random.Random(1)
    for n_a, n_b, spread_b in ((2, 2, 0.01), (3, 5, 0.05), (4, 3, 0.002), (10, 2, 0.03), (7, 12, 0.02)):
        a, b = scores(rng, n_a, 0.80, 0.03), scores(rng, n_b, 0.78, spread_b)
        result = compare(a, b, paired=False, confidence=confidence)
        oracle = stats.ttest_ind(a, b, equal_var=False)
        expected = oracle.confidence_interval(confidence_level=confidence)
        assert close(result.low, expected.low) and close(result.high, expected.high), (n_a, n_b)
        assert close(result.df, float(oracle.df))
        assert not result.paired and (result.n_a, result.n_b) == (n_a, n_b)
        assert close(result.difference, sum(a) / n_a - sum(b) / n_b)


def test_pairing_narrows_the_interval_when_seeds_share_their_luck():
    # Seed 3 is hard for both methods: unpaired, that spread swamps the gap; paired, it cancels.
    a, b = [0.82, 0.85, 0.70, 0.84], [0.80, 0.83, 0.67, 0.82]
    assert compare(a, b).verdict == "A ahead"
    assert compare(a, b, paired=False).verdict == "no detectable difference with 4 and 4 seeds"


# --- verdicts, wins, the zero-spread case ---------------------------------------------------

def test_verdicts_for_clear_cases():
    lora, full = [0.81, 0.83, 0.82], [0.71, 0.74, 0.72]
    assert compare(lora, full, names=("LoRA", "full FT")).verdict == "LoRA ahead"
    assert compare(full, lora, names=("full FT", "LoRA")).verdict == "LoRA ahead"
    assert compare(full, lora, names=("A", "B")).verdict == "B ahead"
    noisy = [0.80, 0.70, 0.84]
    assert compare(noisy, [0.78, 0.74, 0.80], names=("LoRA", "DoRA")).verdict == \
        "no detectable difference with 3 seeds"
    assert compare(noisy, [0.78, 0.74, 0.80, 0.70], paired=False).verdict == \
        "no detectable difference with 3 and 4 seeds"


def test_an_interval_touching_zero_is_no_evidence():
    fields = dict(names=("A", "B"), paired=True, mean_a=0.5, mean_b=0.5, confidence=0.95, df=2.0,
                  n_a=3, n_b=3, wins_a=1, wins_b=1, ties=1)
    assert Comparison(difference=0.1, low=0.0, high=0.2, **fields).verdict == "no detectable difference with 3 seeds"
    assert Comparison(difference=-0.1, low=-0.2, high=0.0, **fields).verdict == "no detectable difference with 3 seeds"
    assert Comparison(difference=0.1, low=1e-12, high=0.2, **fields).verdict == "A ahead"
    assert Comparison(difference=-0.1, low=-0.2, high=-1e-12, **fields).verdict == "B ahead"


def test_wins_count_seeds_when_paired_and_all_pairings_when_unpaired():
    a, b = [0.5, 0.6, 0.7, 0.8, 0.9], [0.4, 0.6, 0.75, 0.7, 0.95]
    paired = compare(a, b)
    assert (paired.wins_a, paired.wins_b, paired.ties) == (2, 2, 1)
    unpaired = compare([0.5, 0.7], [0.6, 0.7, 0.4], paired=False)
    # 0.5 beats 0.4; 0.7 beats 0.6 and 0.4; 0.5 loses to 0.6 and 0.7; 0.7 ties 0.7.
    assert (unpaired.wins_a, unpaired.wins_b, unpaired.ties) == (3, 2, 1)


def test_zero_spread_gives_a_degenerate_interval_without_dividing_by_zero():
    constant_gap = compare([0.5, 0.75, 0.25], [0.25, 0.5, 0.0])  # every difference is exactly 0.25
    assert constant_gap.low == constant_gap.high == constant_gap.difference == 0.25
    assert constant_gap.verdict == "A ahead"
    same = compare([0.5, 0.75, 0.25], [0.5, 0.75, 0.25])
    assert same.low == same.high == 0.0 and same.ties == 3
    assert same.verdict == "no detectable difference with 3 seeds"
    # 0.1 is not exact in binary: the differences are still identical, so still no spread.
    tenth = compare([0.1, 0.1, 0.1], [0.0, 0.0, 0.0])
    assert tenth.low == tenth.high == 0.1
    flat = compare([0.5, 0.5, 0.5], [0.25, 0.25], paired=False)
    assert flat.low == flat.high == 0.25 and math.isfinite(flat.df)


def test_str_is_a_one_line_summary():
    assert str(compare([0.5, 0.75, 0.25], [0.25, 0.5, 0.0], names=("LoRA", "full FT"))) == (
        "LoRA - full FT: 0.250 [0.250, 0.250] (95% CI, 3 paired seeds; LoRA wins 3 of 3): LoRA ahead")
    a, b = [0.80, 0.84, 0.79], [0.83, 0.81, 0.86]
    ci = stats.ttest_rel(a, b).confidence_interval(confidence_level=0.9)
    assert str(compare(a, b, confidence=0.9, names=("LoRA", "full FT"))) == (
        f"LoRA - full FT: {sum(a) / 3 - sum(b) / 3:.3f} [{ci.low:.3f}, {ci.high:.3f}] "
        "(90% CI, 3 paired seeds; LoRA wins 1 of 3): no detectable difference with 3 seeds")
    welch = str(compare([0.8, 0.82, 0.81], [0.7, 0.75], paired=False, names=("LoRA", "full FT")))
    assert "(95% CI, Welch, 3 and 2 seeds; LoRA wins 6 of 6 pairings)" in welch
    assert welch.endswith(": no detectable difference with 3 and 2 seeds") and "\n" not in welch
    tiny = str(compare([0.5, 0.6], [0.5001, 0.6001]))
    assert tiny.startswith("A - B: 0.000 [") and "-0.000" not in tiny


# --- errors ---------------------------------------------------------------------------------

def test_mismatched_lengths_name_both_lengths():
    with pytest.raises(ValueError, match=r"got 3 for LoRA and 4 for DoRA"):
        compare([0.1, 0.2, 0.3], [0.1, 0.2, 0.3, 0.4], names=("LoRA", "DoRA"))
    # Unpaired, different counts are fine.
    assert compare([0.1, 0.2, 0.3], [0.1, 0.2, 0.3, 0.4], paired=False).n_b == 4


@pytest.mark.parametrize("paired", [True, False])
def test_fewer_than_two_scores_is_refused(paired):
    with pytest.raises(ValueError, match=r"LoRA has 1 score; a confidence interval needs at least two"):
        compare([0.8], [0.7], paired=paired, names=("LoRA", "DoRA"))
    with pytest.raises(ValueError, match=r"DoRA has 0 scores; a confidence interval needs at least two"):
        compare([0.8, 0.9], [], paired=paired, names=("LoRA", "DoRA"))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_scores_are_refused_with_their_position(bad):
    with pytest.raises(ValueError, match=r"DoRA: score at index 2 is"):
        compare([0.8, 0.9, 0.7], [0.8, 0.9, bad], names=("LoRA", "DoRA"))
    with pytest.raises(ValueError, match=r"A: score at index 0 is"):
        compare([bad, 0.9], [0.8, 0.9], paired=False)


@pytest.mark.parametrize("confidence", [0.0, 1.0, 95])
def test_confidence_must_be_a_probability(confidence):
    with pytest.raises(ValueError, match="confidence"):
        compare([0.1, 0.2], [0.3, 0.4], confidence=confidence)


# --- rank -----------------------------------------------------------------------------------

BASE = [0.80, 0.84, 0.78, 0.83, 0.81]


def shifted(shift: float, noise: list[float]) -> list[float]:
    return [x + shift + e for x, e in zip(BASE, noise)]


# Three tiers: LoRA and DoRA within noise, VeRA and IA3 about 0.1 below, BitFit about 0.3 below.
METHODS = {
    "VeRA": shifted(-0.100, [0.004, -0.003, 0.002, -0.001, 0.0]),
    "LoRA": BASE,
    "BitFit": shifted(-0.300, [0.01, -0.01, 0.0, 0.005, -0.004]),
    "DoRA": shifted(0.0, [-0.01, 0.01, -0.004, 0.002, -0.003]),
    "IA3": shifted(-0.102, [0.006, -0.004, -0.003, 0.004, 0.0]),
}


def test_rank_groups_methods_the_seeds_cannot_separate():
    # The construction, checked by the oracle: within a tier the leader is not detectably ahead...
    for leader, member in (("LoRA", "DoRA"), ("VeRA", "IA3")):
        assert stats.ttest_rel(METHODS[leader], METHODS[member]).confidence_interval(0.95).low < 0
    # ...and each tier's leader is detectably ahead of the next tier's leader.
    for leader, other in (("LoRA", "VeRA"), ("VeRA", "BitFit")):
        assert stats.ttest_rel(METHODS[leader], METHODS[other]).confidence_interval(0.95).low > 0
    groups = rank(METHODS)
    assert groups == [["LoRA", "DoRA"], ["VeRA", "IA3"], ["BitFit"]]
    assert format_rank(groups) == "{LoRA, DoRA} > {VeRA, IA3} > {BitFit}"
    assert rank(dict(reversed(METHODS.items()))) == groups  # the dict's order does not matter


def test_rank_judges_each_group_from_its_leader():
    a = [0.70, 0.75, 0.72, 0.78]
    b = [x - d for x, d in zip(a, [0.05, -0.01, 0.06, 0.02])]
    c = [x - d for x, d in zip(a, [0.06, 0.04, 0.05, 0.05])]
    # B cannot be told from A, nor C from B, but A is detectably ahead of C: C opens a new group.
    assert compare(a, b).verdict.startswith("no detectable") and compare(b, c).verdict.startswith("no detectable")
    assert compare(a, c).verdict == "A ahead"
    assert rank({"C": c, "B": b, "A": a}) == [["A", "B"], ["C"]]


def test_rank_with_wide_intervals_or_few_methods():
    # The confidence is passed on: at 95% the gap of 0.01 is within noise, at 50% it is not.
    close_pair = {"LoRA": BASE, "DoRA": shifted(-0.01, [-0.01, 0.01, 0.0, -0.02, 0.02])}
    assert stats.ttest_rel(*close_pair.values()).confidence_interval(0.95).low < 0
    assert stats.ttest_rel(*close_pair.values()).confidence_interval(0.5).low > 0
    assert rank(close_pair) == [["LoRA", "DoRA"]]
    assert rank(close_pair, confidence=0.5) == [["LoRA"], ["DoRA"]]
    assert rank({"LoRA": [0.8, 0.9]}) == [["LoRA"]]
    unpaired = rank({"x": [0.5, 0.6, 0.55], "y": [0.1, 0.12], "z": [0.52, 0.56, 0.5, 0.6]}, paired=False)
    assert unpaired == [["x", "z"], ["y"]]
    with pytest.raises(ValueError, match="at least one method"):
        rank({})
    with pytest.raises(ValueError, match="got 5 for LoRA and 2 for short"):
        rank({"LoRA": BASE, "short": [0.1, 0.2]})


def test_format_rank():
    assert format_rank([["LoRA"]]) == "{LoRA}"
    assert format_rank([["LoRA", "DoRA"], ["VeRA"], ["IA3"]]) == "{LoRA, DoRA} > {VeRA} > {IA3}"
    with pytest.raises(ValueError):
        format_rank([])
    with pytest.raises(ValueError):
        format_rank([["LoRA"], []])
