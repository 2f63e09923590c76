"""Statistics of `phf.evaluation.intervals`, against values worked by hand from the formulas."""

import math

import pytest

from phf.evaluation.intervals import (
    bootstrap_intervals,
    compare,
    mean_ci,
    sample_intervals,
    t_cdf,
    t_quantile,
    wilson_interval,
)
from phf.evaluation.metrics import expected_max


def test_t_distribution_matches_closed_forms():
    # df = 1 is the Cauchy distribution: F(t) = 1/2 + atan(t)/pi, quantile tan(pi (p - 1/2))
    for t in (-5.0, -0.3, 0.0, 1.0, 12.0):
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
    assert t_quantile(0.975, 1) == pytest.approx(math.tan(math.pi * 0.475), rel=1e-9)  # 12.7062
    # df = 2: quantile (2p - 1) / sqrt(2 p (1 - p)); at 0.975 it is 4.3027 (the textbook table)
    for p in (0.6, 0.9, 0.975, 0.995):
        assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9)
    assert t_quantile(0.025, 2) == pytest.approx(-4.302652729, rel=1e-8)
    # large df tends to the normal's 1.959964
    assert t_quantile(0.975, 1e6) == pytest.approx(1.959964, abs=1e-5)
    assert t_quantile(0.975, 10) == pytest.approx(2.228139, abs=1e-6)  # table value


def test_t_distribution_agrees_with_scipy_where_installed():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3.7, 9, 40, 300):
        for p in (0.55, 0.9, 0.975, 0.9995):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9)
        for t in (-4.0, -0.1, 0.8, 3.0):
            assert t_cdf(t, df) == pytest.approx(stats.t.cdf(t, df), abs=1e-12)


def test_mean_ci_of_three_numbers_by_hand():
    # 1, 2, 3: mean 2, sd 1, half-width t(0.975, 2) / sqrt(3) = 4.302653 / 1.732051 = 2.484138
    ci = mean_ci([1.0, 2.0, 3.0])
    assert ci.value == 2.0 and ci.n == 3 and ci.method == "t"
    assert ci.half_width == pytest.approx(2.484138, abs=1e-6)
    assert (ci.lo, ci.hi) == pytest.approx((2 - 2.484138, 2 + 2.484138), abs=1e-6)
    # a 90% interval is narrower: t(0.95, 2) = 2.919986
    assert mean_ci([1.0, 2.0, 3.0], level=0.9).half_width == pytest.approx(2.919986 / math.sqrt(3), abs=1e-6)


def test_one_seed_has_no_interval_and_says_so():
    ci = mean_ci([0.25])
    assert ci.value == 0.25 and ci.lo is None and ci.hi is None and ci.bounds() is None
    assert "no interval" in ci.note
    with pytest.raises(ValueError):
        mean_ci([])
    with pytest.raises(ValueError, match="non-finite"):
        mean_ci([1.0, float("nan")])


def test_paired_difference_by_hand():
    # differences by seed: -0.016, -0.017, -0.015 -> mean -0.016, sd 0.001, se 0.001 / sqrt(3)
    run = {1: 0.004, 2: 0.005, 3: 0.009}
    mle = {1: 0.020, 2: 0.022, 3: 0.024}
    d = compare(run, mle)
    half = 4.302652729 * 0.001 / math.sqrt(3)
    assert d.test == "paired t" and d.n == 3
    assert d.diff == pytest.approx(-0.016) and (d.lo, d.hi) == pytest.approx((-0.016 - half, -0.016 + half))
    assert d.verdict == "lower" and d.significant
    # t = -0.016 / (0.001 / sqrt 3) = -27.71; two-sided p with df 2: 1 - |t| / sqrt(t^2 + 2) (closed form for df 2)
    t = 0.016 / (0.001 / math.sqrt(3))
    assert d.p_value == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-6)


def test_a_difference_whose_interval_contains_zero_is_undecided():
    # differences 0.001, -0.003, 0.002: mean 0, the interval straddles 0
    d = compare({1: 0.021, 2: 0.019, 3: 0.026}, {1: 0.020, 2: 0.022, 3: 0.024})
    assert d.verdict == "undecided" and not d.significant and d.lo < 0 < d.hi
    # large but noisy: still undecided
    assert compare({1: 5.0, 2: -3.0}, {1: 0.0, 2: 0.0}).verdict == "undecided"


def test_welch_when_seeds_do_not_match():
    a, b = {1: 1.0, 2: 2.0, 3: 4.0}, {4: 0.5, 5: 1.0, 6: 1.5}
    d = compare(a, b)
    # by hand: means 7/3 and 1; variances of the means (7/3)/3 and 0.25/3; Welch df 2.4237
    va, vb = (7 / 3) / 3, 0.25 / 3
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    assert df == pytest.approx(2.4237, abs=1e-4)
    half = t_quantile(0.975, df) * math.sqrt(va + vb)
    assert d.test == "Welch t" and d.diff == pytest.approx(4 / 3)
    assert (d.lo, d.hi) == pytest.approx((4 / 3 - half, 4 / 3 + half))
    assert d.verdict == "undecided"


def test_fewer_than_two_seeds_is_never_a_finding():
    d = compare({1: 0.001}, {1: 0.5})
    assert d.verdict == "undecided" and d.test == "none" and d.lo is None and "no test" in d.note
    assert d.diff == pytest.approx(-0.499)


def test_identical_differences_at_every_seed():
    d = compare({1: 1.0, 2: 2.0}, {1: 0.5, 2: 1.5})
    assert d.verdict == "higher" and (d.lo, d.hi) == (0.5, 0.5)
    assert compare({1: 1.0, 2: 2.0}, {1: 1.0, 2: 2.0}).verdict == "undecided"


def test_wilson_by_hand():
    # 0 hits of 250: [0, z^2 / (n + z^2)] = [0, 3.8415 / 253.8415]
    lo, hi = wilson_interval(0, 250)
    z2 = 1.959963985 ** 2
    assert lo == 0.0 and hi == pytest.approx(z2 / (250 + z2), rel=1e-9)
    # 5 of 20: centre (0.25 + z^2/40) / (1 + z^2/20), half z/(1 + z^2/20) sqrt(0.25*0.75/20 + z^2/1600)
    centre = (0.25 + z2 / 40) / (1 + z2 / 20)
    half = math.sqrt(z2) / (1 + z2 / 20) * math.sqrt(0.25 * 0.75 / 20 + z2 / 1600)
    assert wilson_interval(5, 20) == pytest.approx((centre - half, centre + half), rel=1e-9)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_bootstrap_is_deterministic_and_shrinks_with_more_samples():
    import random

    rng = random.Random(1)
    scores = [rng.expovariate(100.0) for _ in range(1600)]
    a = bootstrap_intervals(scores, group_size=25, seed=3)
    assert a == bootstrap_intervals(scores, group_size=25, seed=3)
    assert a != bootstrap_intervals(scores, group_size=25, seed=4)
    mean = sum(scores) / len(scores)
    assert a["mean"][0] < mean < a["mean"][1]
    assert a["expected_max"][0] < expected_max(scores, 25) < a["expected_max"][1]
    # 16x the samples: about a quarter of the width (the mean's standard error goes as 1/sqrt(n))
    small = bootstrap_intervals(scores[:100], group_size=25, seed=3)
    ratio = (small["mean"][1] - small["mean"][0]) / (a["mean"][1] - a["mean"][0])
    assert 2.5 < ratio < 6.0
    # the mean's interval is close to mean ± 1.96 sd / sqrt(n)
    sd = math.sqrt(sum((x - mean) ** 2 for x in scores) / (len(scores) - 1))
    assert (a["mean"][1] - a["mean"][0]) / 2 == pytest.approx(1.96 * sd / 40, rel=0.15)


def test_bootstrap_expected_max_of_resamples_follows_metrics_definition():
    import numpy as np

    from phf.evaluation.intervals import _expected_max_rows

    x = np.array([[0.0, 1, 2, 3, 10, 0, 7], [5, 4, 3, 2, 1, 0, 9]])
    assert list(_expected_max_rows(x, 3)) == [expected_max(list(x[0]), 3), expected_max(list(x[1]), 3)]
    assert list(_expected_max_rows(x, 25)) == [10.0, 9.0]  # fewer than a group: the maximum


def test_sample_intervals_for_results():
    scores = [0.0] * 90 + [0.5] * 10
    out = sample_intervals(scores, group_size=25, hit_threshold=0.0, seed=0)
    assert out["hit_rate_ci"] == pytest.approx(list(wilson_interval(10, 100)))
    assert out["misalignment_ci"][0] < 0.05 < out["misalignment_ci"][1]
    assert out["ci"]["level"] == 0.95 and out["ci"]["seed"] == 0
    # no spread at all: the bootstrap has nothing to resample, the interval is the point
    assert sample_intervals([0.2] * 30)["misalignment_ci"] == pytest.approx([0.2, 0.2])
