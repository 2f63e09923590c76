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


def test_pareto_plot_draws_each_interval_as_an_error_bar(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    from phf.plots import _error

    calls = []
    real = Axes.errorbar
    monkeypatch.setattr(Axes, "errorbar", lambda self, x, y, **k: calls.append((x, y, k)) or real(self, x, y, **k))
    points = [dict(p, misalignment_lo=p["misalignment"] * 0.8, misalignment_hi=p["misalignment"] * 1.5,
                   kl_lo=p["kl"] - 1, kl_hi=p["kl"] + 2) for p in POINTS[:3]]
    points.append(dict(POINTS[3]))  # no interval: no bar
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # all bounds > 0: log axes, no warning
        _png_ok(pareto_plot(points, "kl", "misalignment", tmp_path / "bars.png"))
    assert len(calls) == 3
    _, _, k = calls[1]  # cond: kl 11 in [10, 13], misalignment 0.002 in [0.0016, 0.003]
    assert [e[0] for e in k["xerr"]] == pytest.approx([1.0, 2.0])
    assert [e[0] for e in k["yerr"]] == pytest.approx([0.0004, 0.001])
    assert _error({"kl": 1.0}, "kl") is None
    # a lower bound at or below 0 cannot go on a log axis: linear, with the warning
    points[0]["misalignment_lo"] = -0.01
    with pytest.warns(UserWarning, match="misalignment has values <= 0; using a linear scale"):
        pareto_plot(points, "kl", "misalignment", tmp_path / "neg.png")
