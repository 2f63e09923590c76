"""Uncertainty of the measurements: intervals across seeds, within one run, and tests
of a run's difference from MLE.

Three sources of noise, three tools:

* **Across seeds** (`mean_ci`): a seed sets the model's initialisation, the data
  order, the control-token drops and the sampling. The mean of n seeds gets a 95%
  Student-t interval, mean ± t(0.975, n-1) * sd / sqrt(n). One seed gives no interval
  (and says so): the spread between seeds cannot be estimated from one.
* **Within one run** (`sample_intervals`): the evaluation draws N samples; a
  percentile bootstrap over those samples (seeded, so the same samples give the same
  interval) bounds the mean misalignment and the expected maximum over groups of 25.
  The hit rate gets the Wilson score interval instead: it is exact arithmetic rather
  than resampling, and it stays honest at 0 or N hits, where a bootstrap interval
  collapses to a single point ("no uncertainty" from, say, 0 hits in 250 samples).
  A within-run interval says how much the number would move with other samples from
  the same model; it says nothing about another seed's model.
* **Differences from MLE** (`compare`): see its docstring. A difference whose
  interval contains 0 is "undecided", never a finding.

Only the standard library (and numpy for the bootstrap): the Student-t distribution
is computed here from the regularized incomplete beta function (a continued
fraction), so scipy is not needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
#: bootstrap resamples: the interval's ends move by well under 1% of its width between seeds
BOOTSTRAP_RESAMPLES = 2000


# --- distributions ------------------------------------------------------------------------

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz method)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b), for a, b > 0 and 0 <= x <= 1."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must be in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    # the continued fraction converges fast for x < (a + 1) / (a + b + 2); use the symmetry otherwise
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` (> 0, need not be whole) degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p (Student's t, `df` degrees of freedom), by bisection."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return (lo + hi) / 2.0


def normal_quantile(p: float) -> float:
    """The z with P(Z <= z) = p for a standard normal Z, by bisection on erf."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if 0.5 * (1.0 + math.erf(mid / math.sqrt(2.0))) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


# --- intervals ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Interval:
    """A point estimate with its interval; `lo`/`hi` are None when there is none (`note` says why)."""

    value: float
    lo: float | None
    hi: float | None
    n: int
    method: str
    note: str = ""

    @property
    def half_width(self) -> float | None:
        """Half the interval's width (for "mean ± half-width"); None without an interval."""
        return None if self.lo is None or self.hi is None else (self.hi - self.lo) / 2.0

    def bounds(self) -> list[float] | None:
        return None if self.lo is None or self.hi is None else [self.lo, self.hi]


def _finite(values: Sequence[float], what: str) -> list[float]:
    out = [float(v) for v in values]
    if not out:
        raise ValueError(f"{what} is empty")
    bad = [v for v in out if not math.isfinite(v)]
    if bad:
        raise ValueError(f"{what} has non-finite values: {bad[:3]}")
    return out


def mean_ci(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean of `values` (one per seed) with its Student-t interval:
    mean ± t((1 + level) / 2, n - 1) * s / sqrt(n), s the sample standard deviation.
    With one value there is no interval (lo = hi = None)."""
    xs = _finite(values, "values")
    n = len(xs)
    m = sum(xs) / n
    if n < 2:
        return Interval(m, None, None, n, "none", "1 seed: no interval across seeds")
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    h = t_quantile((1.0 + level) / 2.0, n - 1) * sd / math.sqrt(n)
    return Interval(m, m - h, m + h, n, "t")


def wilson_interval(hits: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of a proportion hits / n (stays inside [0, 1], and has a
    width at 0 or n hits)."""
    if n < 1 or not 0 <= hits <= n:
        raise ValueError(f"need 0 <= hits <= n and n >= 1, got {hits} of {n}")
    z = normal_quantile((1.0 + level) / 2.0)
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _expected_max_rows(x: np.ndarray, group_size: int) -> np.ndarray:
    """`metrics.expected_max` of each row of x: the mean over consecutive whole groups of
    the group maximum (the maximum of the row when it holds less than one group)."""
    groups = x.shape[1] // group_size
    if groups == 0:
        return x.max(axis=1)
    return x[:, :groups * group_size].reshape(x.shape[0], groups, group_size).max(axis=2).mean(axis=1)


def bootstrap_intervals(scores: Sequence[float], group_size: int = 25, level: float = LEVEL,
                        resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Percentile-bootstrap intervals of the mean and of the expected maximum of `scores`.

    Each resample draws len(scores) samples with replacement (numpy's PCG64 seeded
    with `seed`, so the result is deterministic); the expected maximum of a resample
    uses consecutive groups of `group_size`, which are random groups since the resample
    is. Returns {"mean": (lo, hi), "expected_max": (lo, hi)}.
    """
    x = np.asarray(_finite(scores, "scores"), dtype=np.float64)
    rng = np.random.default_rng(seed)
    means, maxima = [], []
    chunk = max(1, 2_000_000 // len(x))  # bounds memory: a chunk holds ~2M resampled scores
    for first in range(0, resamples, chunk):
        idx = rng.integers(0, len(x), size=(min(chunk, resamples - first), len(x)))
        sample = x[idx]
        means.append(sample.mean(axis=1))
        maxima.append(_expected_max_rows(sample, group_size))
    tails = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
    out = {}
    for key, stats in (("mean", means), ("expected_max", maxima)):
        lo, hi = np.quantile(np.concatenate(stats), tails)
        out[key] = (float(lo), float(hi))
    return out


def sample_intervals(scores: Sequence[float], group_size: int = 25, hit_threshold: float = 0.0,
                     level: float = LEVEL, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> dict:
    """Within-run intervals for results.json: {"misalignment_ci", "expected_max_ci",
    "hit_rate_ci": [lo, hi], "ci": {level, method, resamples, seed}}; hit rate by Wilson,
    the others by the percentile bootstrap of `bootstrap_intervals`."""
    boot = bootstrap_intervals(scores, group_size, level, resamples, seed)
    hits = sum(1 for s in scores if s > hit_threshold)
    return {
        "misalignment_ci": list(boot["mean"]),
        "expected_max_ci": list(boot["expected_max"]),
        "hit_rate_ci": list(wilson_interval(hits, len(scores), level)),
        "ci": {"level": level, "method": "percentile bootstrap over samples (hit rate: Wilson score)",
               "resamples": resamples, "seed": seed},
    }


# --- differences from a reference run --------------------------------------------------------

@dataclass(frozen=True)
class Difference:
    """run - reference: the mean difference, its interval, the test and the verdict."""

    diff: float | None
    lo: float | None
    hi: float | None
    n: int
    test: str
    p_value: float | None
    verdict: str  # "lower", "higher" or "undecided"
    note: str = ""

    @property
    def significant(self) -> bool:
        return self.verdict in ("lower", "higher")


def _verdict(lo: float, hi: float) -> str:
    if lo > 0:
        return "higher"
    if hi < 0:
        return "lower"
    return "undecided"  # the interval contains 0


def compare(run: Mapping[int, float], reference: Mapping[int, float], level: float = LEVEL) -> Difference:
    """Test run - reference across seeds; `run` and `reference` map seed -> value.

    Paired by seed when at least 2 seeds are in both: the differences d_s = run_s -
    reference_s get the one-sample t interval d̄ ± t(0.975, n-1) * sd(d) / sqrt(n) and a
    two-sided t-test of mean 0. Why paired: runs of one seed share the model's
    initialisation, the order of the training data and the sampling seed, so part of
    the seed-to-seed noise is common to both and cancels in the difference; pairing is
    valid even where that sharing is weaker (filtering trains on fewer documents),
    it then only costs degrees of freedom. Otherwise (seeds that do not match), Welch's
    unequal-variance t-test with the Welch-Satterthwaite degrees of freedom, when each
    side has at least 2 seeds. With fewer there is no test: "undecided".

    The verdict is "lower" or "higher" only when the interval excludes 0. Each test is
    at the level given, not corrected for the number of comparisons in a report.
    """
    run = {k: float(v) for k, v in run.items() if v is not None and math.isfinite(v)}
    reference = {k: float(v) for k, v in reference.items() if v is not None and math.isfinite(v)}
    common = sorted(set(run) & set(reference))
    q = (1.0 + level) / 2.0
    if len(common) >= 2:
        d = [run[s] - reference[s] for s in common]
        n = len(d)
        m = sum(d) / n
        se = math.sqrt(sum((x - m) ** 2 for x in d) / (n - 1) / n)
        df, test = n - 1, "paired t"
    elif len(run) >= 2 and len(reference) >= 2:
        a, b = list(run.values()), list(reference.values())
        ma, mb = sum(a) / len(a), sum(b) / len(b)
        va = sum((x - ma) ** 2 for x in a) / (len(a) - 1) / len(a)
        vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1) / len(b)
        m, se, n, test = ma - mb, math.sqrt(va + vb), min(len(a), len(b)), "Welch t"
        df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if va + vb > 0 else len(a) + len(b) - 2
    else:
        have = min(len(run), len(reference))
        diff = (sum(run.values()) / len(run) - sum(reference.values()) / len(reference)) if have else None
        return Difference(diff, None, None, have, "none", None, "undecided",
                          f"{have} seed{'s' if have != 1 else ''}: no test across seeds (needs 2)")
    if se == 0.0:  # every seed gave the same difference
        return Difference(m, m, m, n, test, 1.0 if m == 0 else 0.0, _verdict(m, m), "no spread across seeds")
    h = t_quantile(q, df) * se
    p = 2.0 * (1.0 - t_cdf(abs(m) / se, df))
    return Difference(m, m - h, m + h, n, test, p, _verdict(m - h, m + h))
