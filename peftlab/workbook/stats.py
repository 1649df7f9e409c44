"""Comparing two fine-tuning methods over a few seeds, honestly.

A table that says "LoRA 0.812, full FT 0.846" invites the claim "full FT is better", but with three
seeds the seed-to-seed spread is often as large as the gap. So every comparison here comes with a
confidence interval on the difference of the means, and a claim "A ahead of B" is made only when
that interval excludes zero. With 3 seeds the interval is wide (the t quantile for 2 degrees of
freedom at 95% is 4.30, against 1.96 for a normal), which is the point: few seeds, few claims.

- Paired (the default): both methods ran on the same seeds, so seed i of A is compared with seed i
  of B. The interval is Student's t interval on the mean of the differences a_i - b_i, with n - 1
  degrees of freedom (Student, 1908, "The probable error of a mean", Biometrika 6).
- Unpaired: the seeds have nothing in common. The interval is Welch's t interval on
  mean(a) - mean(b), with the Welch-Satterthwaite degrees of freedom, which does not assume equal
  variances (Welch, 1947, "The generalization of 'Student's' problem when several different
  population variances are involved", Biometrika 34).

Scores are "higher is better" (accuracy, recall); for a loss or perplexity pass the negatives.
Only the standard library is used: the t quantile is computed here from the regularized
incomplete beta function (a continued fraction, evaluated with Lentz's method) and inverted with
Newton's method inside a bisection bracket; it matches scipy.stats.t.ppf to about 1e-12 in
relative terms for the degrees of freedom a handful of seeds give (1e-10 still at df = 10^5).
"""
import math
from collections.abc import Sequence
from dataclasses import dataclass

_EPS = 2.220446049250313e-16  # the float64 machine epsilon
_TINY = 1e-300                # keeps Lentz's method away from a division by zero


# --- The Student t distribution -------------------------------------------------------------

def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b), by the modified Lentz method; it converges quickly
    for x < (a + 1) / (a + b + 2), which is the only place it is called."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    result = d
    for m in range(1, 10_000):
        # Each step of the fraction has an even and an odd term.
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            result *= c * d
        if abs(c * d - 1.0) < _EPS:
            return result
    raise ArithmeticError(f"the incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def _regularized_beta(a: float, b: float, x: float, y: float) -> float:
    """I_x(a, b), with y = 1 - x passed separately so that neither loses digits to a subtraction."""
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    front = math.exp(a * math.log(x) + b * math.log(y) - _log_beta(a, b))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    # Past the mean the fraction converges slowly; use I_x(a, b) = 1 - I_y(b, a) instead.
    return 1.0 - front * _beta_continued_fraction(b, a, y) / b


def _t_upper_tail(t: float, df: float) -> float:
    """P(T > t) for t >= 0: half of I_x(df/2, 1/2) with x = df / (df + t^2)."""
    t2 = t * t
    return 0.5 * _regularized_beta(df / 2.0, 0.5, df / (df + t2), t2 / (df + t2))


def _t_density(t: float, df: float) -> float:
    log_norm = math.lgamma((df + 1.0) / 2.0) - math.lgamma(df / 2.0) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm - (df + 1.0) / 2.0 * math.log1p(t * t / df))


def _t_upper_quantile(q: float, df: float) -> float:
    """The t >= 0 with P(T > t) = q, for 0 < q <= 1/2."""
    lo, hi = 0.0, 1.0
    while _t_upper_tail(hi, df) > q:  # bracket the root; the tail falls as t grows
        lo, hi = hi, 2.0 * hi
    t = 0.5 * (lo + hi)
    for _ in range(500):
        excess = _t_upper_tail(t, df) - q
        if excess == 0.0:
            return t
        if excess > 0.0:
            lo = t
        else:
            hi = t
        # Newton's step (the tail's derivative is minus the density); bisect if it leaves the bracket.
        candidate = t + excess / _t_density(t, df)
        if not lo < candidate < hi:
            candidate = 0.5 * (lo + hi)
        if abs(candidate - t) <= 4 * _EPS * candidate or hi - lo <= 4 * _EPS * hi:
            return candidate
        t = candidate
    return t


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t distribution with `df` degrees of freedom (df may be
    fractional, as Welch's is): the t with P(T <= t) = p. Same as scipy.stats.t.ppf(p, df)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie strictly between 0 and 1, got {p}")
    if not (math.isfinite(df) and df > 0):
        raise ValueError(f"degrees of freedom must be a positive finite number, got {df}")
    if p == 0.5:
        return 0.0
    # The distribution is symmetric: solve in the upper tail, where the small probability is exact.
    return _t_upper_quantile(1.0 - p, df) if p > 0.5 else -_t_upper_quantile(p, df)


# --- Comparing two methods ------------------------------------------------------------------

def _fmt(x: float) -> str:
    text = f"{x:.3f}"
    return "0.000" if text == "-0.000" else text  # a difference of -0.0001 is no negative finding


@dataclass(frozen=True)
class Comparison:
    """The result of `compare`: A minus B, with its confidence interval [low, high].

    n_a and n_b are the number of scores of each method (equal when paired: the number of seeds).
    wins_a / wins_b / ties count, when paired, the seeds on which A scored higher / lower / the
    same; when unpaired, all n_a * n_b pairings (a_i, b_j), since no seed of A belongs to one of B.
    """
    names: tuple[str, str]
    paired: bool
    mean_a: float
    mean_b: float
    difference: float   # the interval's centre: mean of a_i - b_i (paired), mean(a) - mean(b) (unpaired)
    low: float
    high: float
    confidence: float
    df: float           # degrees of freedom of the t quantile used
    n_a: int
    n_b: int
    wins_a: int
    wins_b: int
    ties: int

    @property
    def verdict(self) -> str:
        """Names A ("LoRA ahead") only when the whole interval lies above zero, B when it lies below;
        an interval that contains or touches zero is no evidence either way."""
        name_a, name_b = self.names
        if self.low > 0:
            return f"{name_a} ahead"
        if self.high < 0:
            return f"{name_b} ahead"
        seeds = f"{self.n_a}" if self.paired else f"{self.n_a} and {self.n_b}"
        return f"no detectable difference with {seeds} seeds"

    def __str__(self) -> str:
        name_a, name_b = self.names
        level = f"{round(self.confidence * 100, 6):g}%"
        if self.paired:
            design = f"{self.n_a} paired seeds; {name_a} wins {self.wins_a} of {self.n_a}"
        else:
            design = (f"Welch, {self.n_a} and {self.n_b} seeds; "
                      f"{name_a} wins {self.wins_a} of {self.n_a * self.n_b} pairings")
        return (f"{name_a} - {name_b}: {_fmt(self.difference)} [{_fmt(self.low)}, {_fmt(self.high)}] "
                f"({level} CI, {design}): {self.verdict}")


def _checked_scores(scores: Sequence[float], name: str) -> list[float]:
    values = [float(x) for x in scores]
    for i, x in enumerate(values):
        if not math.isfinite(x):
            raise ValueError(f"{name}: score at index {i} is {x}; every score must be a finite number")
    if len(values) < 2:
        raise ValueError(f"{name} has {len(values)} score{'' if len(values) == 1 else 's'}; "
                         f"a confidence interval needs at least two (one per seed)")
    return values


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _sample_variance(values: Sequence[float]) -> float:
    """The unbiased variance (divisor n - 1), exactly 0 when all values are equal."""
    if all(v == values[0] for v in values):
        return 0.0  # spelled out so that rounding in the mean cannot invent a spread
    m = _mean(values)
    return math.fsum((v - m) ** 2 for v in values) / (len(values) - 1)


def _wins(pairs: list[tuple[float, float]]) -> tuple[int, int, int]:
    wins_a = sum(x > y for x, y in pairs)
    wins_b = sum(x < y for x, y in pairs)
    return wins_a, wins_b, len(pairs) - wins_a - wins_b


def compare(a: Sequence[float], b: Sequence[float], *, paired: bool = True, confidence: float = 0.95,
            names: tuple[str, str] = ("A", "B")) -> Comparison:
    """Method A against method B from their per-seed scores (higher is better).

    paired=True: a[i] and b[i] come from the same seed; Student's t interval on the mean of the
    differences (df = n - 1). paired=False: Welch's t interval on mean(a) - mean(b). If the spread is
    zero (all differences equal, or both methods constant when unpaired) the interval is the point.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    name_a, name_b = names
    xs, ys = _checked_scores(a, name_a), _checked_scores(b, name_b)
    p = 0.5 + confidence / 2.0  # two-sided: half of the excluded probability in each tail

    if paired:
        if len(xs) != len(ys):
            raise ValueError(f"a paired comparison needs one score per seed on both sides: "
                             f"got {len(xs)} for {name_a} and {len(ys)} for {name_b}")
        differences = [x - y for x, y in zip(xs, ys)]
        n = len(differences)
        variance = _sample_variance(differences)
        centre = differences[0] if variance == 0 else _mean(differences)
        df = float(n - 1)
        half = t_quantile(p, df) * math.sqrt(variance / n)
        wins = _wins(list(zip(xs, ys)))
    else:
        se2_a, se2_b = _sample_variance(xs) / len(xs), _sample_variance(ys) / len(ys)
        centre = _mean(xs) - _mean(ys)
        if se2_a + se2_b == 0:
            # Welch-Satterthwaite is 0/0 here; the width is zero whatever df is, so report the pooled df.
            df, half = float(len(xs) + len(ys) - 2), 0.0
        else:
            df = (se2_a + se2_b) ** 2 / (se2_a ** 2 / (len(xs) - 1) + se2_b ** 2 / (len(ys) - 1))
            half = t_quantile(p, df) * math.sqrt(se2_a + se2_b)
        wins = _wins([(x, y) for x in xs for y in ys])

    return Comparison(names=(name_a, name_b), paired=paired, mean_a=_mean(xs), mean_b=_mean(ys),
                      difference=centre, low=centre - half, high=centre + half, confidence=confidence,
                      df=df, n_a=len(xs), n_b=len(ys), wins_a=wins[0], wins_b=wins[1], ties=wins[2])


# --- Ranking several methods ----------------------------------------------------------------

def rank(methods: dict[str, Sequence[float]], *, paired: bool = True, confidence: float = 0.95) -> list[list[str]]:
    """Groups of methods, best group first, instead of a strict order the seeds cannot support.

    The rule: sort the methods by mean score, best first (ties keep the dict's order). Walk down
    the list; the first method opens a group, and it is that group's leader. Each next method joins
    the current group unless `compare(leader, method)` puts the leader detectably ahead (interval
    above zero); then it opens a new group and leads it. So a group holds the methods that its
    best member cannot be shown to beat; a method may be indistinguishable from the last member
    of the previous group and still start a new one, because groups are judged from their leader.
    """
    if not methods:
        raise ValueError("rank needs at least one method")
    order = sorted(methods, key=lambda name: _mean(_checked_scores(methods[name], name)), reverse=True)
    groups = [[order[0]]]
    for name in order[1:]:
        leader = groups[-1][0]
        comparison = compare(methods[leader], methods[name], paired=paired, confidence=confidence,
                             names=(leader, name))
        if comparison.low > 0:  # the leader is detectably ahead: `name` opens the next group
            groups.append([name])
        else:
            groups[-1].append(name)
    return groups


def format_rank(groups: Sequence[Sequence[str]]) -> str:
    """The groups of `rank` as one line, e.g. "{LoRA, DoRA} > {VeRA} > {IA3}": braces around methods
    that cannot be told apart, ">" between groups whose leaders can."""
    if not groups or any(not group for group in groups):
        raise ValueError("format_rank needs at least one group, and no empty group")
    return " > ".join("{" + ", ".join(group) + "}" for group in groups)
