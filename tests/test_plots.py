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


# the PEP8 sweep's eight runs (docs/findings/pep8/all): means over three seeds
PEP8_RUNS = [("mle", "mle", 4.659, 0.0842), ("filtering", "filtering", 5.582, 0.0754),
             ("conditional", "conditional", 4.396, 0.0245), ("unlikelihood", "unlikelihood", 4.641, 0.0795),
             ("rwr", "rwr", 4.657, 0.0847), ("awr", "awr", 5.875, 0.0866), ("mle-50pct", "mle", 5.295, 0.0864),
             ("mle+conditional-finetune", "conditional", 4.471, 0.0234)]


def _drawn(monkeypatch, tmp_path, points, x_key="heldout_loss"):
    """pareto_plot's axes, kept open and drawn, besides the PNG it writes."""
    import phf.plots

    kept = []
    real_save = phf.plots._save
    monkeypatch.setattr(phf.plots, "_save", lambda fig, out: kept.append(fig) or real_save(fig, out))
    monkeypatch.setattr(phf.plots.plt, "close", lambda fig: None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        _png_ok(pareto_plot(points, x_key, "misalignment", tmp_path / "pareto.png"))
    kept[0].canvas.draw()
    return kept[0].axes[0]


def _pep8_points():
    return [{"run": n, "objective": o, "heldout_loss": x, "misalignment": y} for n, o, x, y in PEP8_RUNS]


def test_every_run_has_its_own_colour_and_marker_and_legend_entry(monkeypatch, tmp_path):
    from phf.plots import run_styles

    names = [r[0] for r in PEP8_RUNS]
    styles = run_styles(names, [r[1] for r in PEP8_RUNS])
    assert len(set(styles.values())) == len(names)
    assert len({c for c, _ in styles.values()}) == len(names) and len({m for _, m in styles.values()}) == len(names)
    assert styles["mle"] != styles["mle-50pct"]
    # a run named after its objective keeps that objective's style, whatever the order
    assert run_styles(list(reversed(names)), [r[1] for r in reversed(PEP8_RUNS)])["mle"] == styles["mle"]

    ax = _drawn(monkeypatch, tmp_path, _pep8_points())
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [*names, "Pareto frontier"]
    drawn = [(tuple(c.get_facecolor()[0][:3]), c.get_paths()[0].vertices.tobytes()) for c in ax.collections
             if c.get_label() in names]
    assert len(set(drawn)) == len(names)


def test_ticks_are_labelled_where_the_points_are(monkeypatch, tmp_path):
    ax = _drawn(monkeypatch, tmp_path, _pep8_points())
    assert ax.get_xscale() == "linear"  # 4.4 to 5.9: a log axis would label only 5 and 6
    labelled = [float(t.get_text()) for t in ax.get_xticklabels() if t.get_text()
                if ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]]
    assert len([v for v in labelled if 4.3 <= v <= 4.7]) >= 2 and len(labelled) >= 6
    # misalignment 0.023 to 0.087 on a log axis: the 2x and 5x ticks carry labels
    ylabels = {t.get_text() for t in ax.get_yticklabels(minor=True) if t.get_text()}
    assert {"0.02", "0.05"} <= ylabels


def test_the_frontier_in_the_legend_is_drawn_to_the_edges(monkeypatch, tmp_path):
    ax = _drawn(monkeypatch, tmp_path, _pep8_points())
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == "Pareto frontier"]
    xs, ys = line.get_xdata(), line.get_ydata()
    assert ys[0] == pytest.approx(ax.get_ylim()[1]) and xs[-1] == pytest.approx(ax.get_xlim()[1])
    assert xs[1] == pytest.approx(4.396) and ys[-1] == pytest.approx(0.0234)  # conditional, then the finetuned run
    # overlapping markers (mle, unlikelihood, rwr) get their names beside them
    names = {t.get_text() for t in ax.texts}
    assert {"mle", "rwr"} <= names and "awr" not in names
