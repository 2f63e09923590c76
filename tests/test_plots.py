import warnings

import pytest

from phf.plots import curves_plot, pareto_frontier, pareto_plot

POINTS = [
    {"run": "mle", "objective": "mle", "misalignment": 0.012, "kl": 10.0, "heldout_loss": 2.3},
    {"run": "cond", "objective": "conditional", "misalignment": 0.002, "kl": 11.0, "heldout_loss": 2.35},
    {"run": "filt", "objective": "filtering", "misalignment": 0.006, "kl": 14.0, "heldout_loss": 2.5},
    {"run": "ul", "objective": "unlikelihood", "misalignment": 0.001, "kl": 20.0, "heldout_loss": 2.7},
    {"run": "awr", "objective": "awr", "misalignment": 0.012, "kl": 12.0, "heldout_loss": 2.4},
    {"run": "nokl", "objective": "rwr", "misalignment": 0.0005, "kl": None, "heldout_loss": 2.9},
]


def _png_ok(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 5000


def test_pareto_frontier_known_answer():
    names = [p["run"] for p in pareto_frontier(POINTS, "kl", "misalignment")]
    # filt is dominated by cond; awr by mle (same y, larger x); nokl has no KL
    assert names == ["mle", "cond", "ul"]
    names = [p["run"] for p in pareto_frontier(POINTS, "heldout_loss", "misalignment")]
    assert names == ["mle", "cond", "ul", "nokl"]


def test_pareto_frontier_ties_and_empty():
    a = {"x": 1.0, "y": 1.0}
    assert pareto_frontier([a, dict(a)], "x", "y") == [a, a]
    assert pareto_frontier([], "x", "y") == []
    assert pareto_frontier([{"x": float("nan"), "y": 1.0}], "x", "y") == []


def test_pareto_plot_writes_png(tmp_path):
    with pytest.warns(UserWarning, match="nokl"):
        out = pareto_plot(POINTS, "kl", "misalignment", tmp_path / "sub" / "pareto.png")
    _png_ok(out)


def test_pareto_plot_zero_values_fall_back_to_linear(tmp_path):
    points = [dict(p, kl=0.0 if p["run"] == "mle" else p["kl"]) for p in POINTS[:3]]
    with pytest.warns(UserWarning, match="linear"):
        out = pareto_plot(points, "kl", "misalignment", tmp_path / "p.png")
    _png_ok(out)


def test_curves_plot_writes_png(tmp_path):
    runs = {
        name: [{"tokens_seen": t * 1000, "eval/misalignment": 0.01 / t, "eval/heldout_loss": 3 - t / 10}
               for t in range(1, 6)] + [{"tokens_seen": 7000, "train/loss": 1.0}]
        for name in ("mle", "conditional", "filtering")
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = curves_plot(runs, tmp_path / "curves.png")
        single = curves_plot(runs, tmp_path / "one.png", y="eval/misalignment")
    _png_ok(out)
    _png_ok(single)
