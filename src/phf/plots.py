"""Plots for the report: misalignment vs capability (Pareto) and training curves.

Matplotlib with the Agg backend (no display needed). Layout is "constrained" and
files are saved with a tight bounding box, so labels and legends are never clipped.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

#: fixed style per objective, so a colour means the same thing in every figure (the run
#: named after the objective gets it; other runs of that objective get styles of their own)
_OBJECTIVE_STYLES = {
    "mle": ("tab:gray", "o"),
    "filtering": ("tab:blue", "s"),
    "conditional": ("tab:green", "^"),
    "unlikelihood": ("tab:red", "v"),
    "rwr": ("tab:purple", "D"),
    "awr": ("tab:orange", "P"),
}
_EXTRA_STYLES = [("tab:brown", "X"), ("tab:pink", "*"), ("tab:olive", "h"),
                 ("tab:cyan", "p"), ("black", "<"), ("gold", ">"), ("navy", "d"), ("lime", "8")]

#: an axis spanning less than this ratio (max / min) is drawn linear: under about half a
#: decade a log scale has no ticks of its own to label, and says nothing a linear one does not
LOG_MIN_RATIO = 3.0

_AXIS_LABELS = {
    "misalignment": "misalignment score (lower is better)",
    "kl": "KL(reference || model), nats (lower is better)",
    "heldout_loss": "held-out loss, nats/token (lower is better)",
    "expected_max": "expected max score (lower is better)",
    "tokens_seen": "tokens seen",
    "eval/misalignment": "misalignment score",
    "eval/heldout_loss": "held-out loss (nats/token)",
    "eval/kl": "KL(reference || model)",
}


def run_styles(labels: Sequence[str], objectives: Sequence[str | None] | None = None) -> dict[str, tuple[str, str]]:
    """{label: (colour, marker)}, a different pair for every label.

    A label that is an objective's name ("mle") gets that objective's style; then each
    other label gets its objective's style (from `objectives`, else the label's start,
    "mle" in "mle+conditional-finetune") while no label holds it, else the next unused
    extra style. So "mle-50pct" never looks like "mle".
    """
    objectives = list(objectives) if objectives is not None else [None] * len(labels)
    assigned: dict[str, tuple[str, str]] = {}
    for label in labels:
        if label.lower() in _OBJECTIVE_STYLES and label not in assigned:
            assigned[label] = _OBJECTIVE_STYLES[label.lower()]
    for label, objective in zip(labels, objectives):
        if label in assigned:
            continue
        base = (objective or label.split("/")[0].split("+")[0]).lower()
        used = set(assigned.values())
        if base in _OBJECTIVE_STYLES and _OBJECTIVE_STYLES[base] not in used:
            assigned[label] = _OBJECTIVE_STYLES[base]
        else:
            free = [s for s in _EXTRA_STYLES if s not in used] or _EXTRA_STYLES
            assigned[label] = free[0]
    return assigned


def use_log(values: Sequence[float]) -> bool:
    """Whether an axis with these values (points and interval ends) is drawn log: all
    above 0, spanning at least LOG_MIN_RATIO."""
    values = [v for v in values if _is_number(v)]
    return bool(values) and min(values) > 0 and max(values) / min(values) >= LOG_MIN_RATIO


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def pareto_frontier(points: Sequence[Mapping], x_key: str = "kl",
                    y_key: str = "misalignment") -> list[Mapping]:
    """The points not dominated on (x, y), both lower-is-better, sorted by x.

    A point is dominated when another is <= on both axes and < on at least one.
    Points missing either value (e.g. `kl: null`) are ignored; exact duplicates
    are all kept.
    """
    valid = [p for p in points if _is_number(p.get(x_key)) and _is_number(p.get(y_key))]
    frontier = []
    for p in valid:
        px, py = p[x_key], p[y_key]
        dominated = any(q[x_key] <= px and q[y_key] <= py and (q[x_key] < px or q[y_key] < py)
                        for q in valid)
        if not dominated:
            frontier.append(p)
    return sorted(frontier, key=lambda p: (p[x_key], p[y_key]))


def _scale(ax, which: str, values: Sequence[float], log: bool, key: str) -> None:
    """Log scale with plain-number tick labels ("0.002", "14"), which stay narrow
    where matplotlib's default "1.4x10^1" labels run into each other; a linear scale
    (asked for, or a narrow range) with about ten labelled ticks, so that points a few
    percent apart still sit between labelled ticks."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    # A log axis cannot show 0 or negative values (misalignment can be 0, a KL
    # estimate can be slightly negative): fall back to linear and say so.
    if log and values and any(v <= 0 for v in values):
        warnings.warn(f"{key} has values <= 0; using a linear scale", stacklevel=3)
    if not (log and use_log(values)):
        axis.set_major_locator(ticker.MaxNLocator(nbins=10, steps=[1, 2, 5, 10]))
        axis.set_minor_locator(ticker.AutoMinorLocator(2))
        return
    getattr(ax, f"set_{which}scale")("log")
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    # Within a few decades there are few major ticks, so label some minor ones:
    # 2x, 3x and 5x on up to 1.5 decades, 2x and 5x on up to 3, none beyond.
    decades = math.log10(max(values) / min(values))
    if decades < 1.5:
        axis.set_minor_formatter(ticker.FuncFormatter(_label_mantissas(2, 3, 5)))
    elif decades < 3:
        axis.set_minor_formatter(ticker.FuncFormatter(_label_mantissas(2, 5)))
    else:
        axis.set_minor_formatter(ticker.NullFormatter())


def _label_mantissas(*mantissas: int):
    """A tick formatter that labels only the ticks at these multiples of a power of 10."""
    def label(value: float, _pos=None) -> str:
        mantissa = value / 10 ** math.floor(math.log10(value) + 1e-9)
        return f"{value:g}" if any(abs(mantissa - m) < 1e-6 for m in mantissas) else ""
    return label


#: markers closer than this on screen, in points on both axes, hide each other
_MARKER_POINTS = 9.0


def _overlapping(ax, points: Sequence[Mapping], x_key: str, y_key: str) -> dict[int, int]:
    """{id(point): rank} of points whose markers overlap another's where the axes draw
    them (scales, limits and layout final), ranked in drawing order within each cluster."""
    ax.figure.draw_without_rendering()  # the constrained layout places the axes
    xy = ax.transData.transform([(p[x_key], p[y_key]) for p in points]) * 72 / ax.figure.dpi
    close = {}
    for i, a in enumerate(xy):
        near = [j for j, b in enumerate(xy) if all(abs(a[k] - b[k]) < _MARKER_POINTS for k in (0, 1))]
        if len(near) > 1:
            close[id(points[i])] = near.index(i)
    return close


#: where the names of overlapping points go: (dx, dy) in points from the marker, alignment
_NAME_PLACES = ((7, 5, "left"), (7, -12, "left"), (-7, 5, "right"), (-7, -12, "right"))


def _error(p: Mapping, key: str) -> list[list[float]] | None:
    """matplotlib's asymmetric error [[below], [above]] from `<key>_lo`/`<key>_hi`, or None."""
    lo, hi = p.get(f"{key}_lo"), p.get(f"{key}_hi")
    if not (_is_number(lo) and _is_number(hi)):
        return None
    return [[max(0.0, p[key] - lo)], [max(0.0, hi - p[key])]]


def _with_bounds(points: Sequence[Mapping], key: str) -> list[float]:
    """The values on an axis with their interval ends (which decide log or linear)."""
    return [v for p in points for v in (p[key], p.get(f"{key}_lo"), p.get(f"{key}_hi")) if _is_number(v)]


def pareto_plot(points: Sequence[Mapping], x_key: str, y_key: str, out_png: str | Path,
                log: bool = True, *, label_key: str = "objective", name_key: str = "run",
                title: str | None = None) -> Path:
    """Scatter misalignment (y) against a capability cost (x: KL or held-out loss).

    One colour + marker and legend entry per run (`name_key`; `label_key`, the
    objective, picks the style family: see `run_styles`), names written beside points
    that sit on top of each other, and the Pareto frontier (lower-left is better on
    both axes) drawn as a dashed boundary from the top of the axes through the frontier
    points to the right edge, above the error bars. Points missing x or y are left out
    (with a warning). A point with `<key>_lo` and `<key>_hi` (its interval, e.g. 95%
    over seeds) gets an error bar on that axis; an axis whose values or intervals reach
    0 or below, or span less than LOG_MIN_RATIO, is drawn linear. Returns the path written.
    """
    out_png = Path(out_png)
    usable = [p for p in points if _is_number(p.get(x_key)) and _is_number(p.get(y_key))]
    skipped = [str(p.get(name_key, p.get(label_key, "?"))) for p in points if p not in usable]
    if skipped:
        warnings.warn(f"no {x_key}/{y_key} for: {', '.join(skipped)}", stacklevel=2)

    fig, ax = plt.subplots(figsize=(7, 5), layout="constrained")
    def legend_label(p):
        return str(p.get(name_key) or p.get(label_key) or "?")

    labels = list(dict.fromkeys(legend_label(p) for p in usable))
    objectives = {legend_label(p): p.get(label_key) for p in usable}
    styles = run_styles(labels, [objectives[label] for label in labels])
    for label in labels:
        group = [p for p in usable if legend_label(p) == label]
        colour, marker = styles[label]
        for p in group:
            xerr, yerr = _error(p, x_key), _error(p, y_key)
            if xerr is not None or yerr is not None:
                ax.errorbar([p[x_key]], [p[y_key]], xerr=xerr, yerr=yerr, fmt="none", ecolor=colour,
                            elinewidth=1.3, capsize=3, alpha=0.85, zorder=2.5)
        ax.scatter([p[x_key] for p in group], [p[y_key] for p in group], s=70, c=colour, alpha=0.85,
                   marker=marker, label=label, edgecolors="black", linewidths=0.6, zorder=3)

    _scale(ax, "x", _with_bounds(usable, x_key), log, x_key)
    _scale(ax, "y", _with_bounds(usable, y_key), log, y_key)
    _frontier(ax, pareto_frontier(usable, x_key, y_key), x_key, y_key)
    ax.set_xlabel(_AXIS_LABELS.get(x_key, x_key))
    ax.set_ylabel(_AXIS_LABELS.get(y_key, y_key))
    ax.set_title(title or "misalignment vs capability (lower-left is better)")
    ax.grid(True, which="both", alpha=0.3)
    if usable:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=9)
        hidden = _overlapping(ax, usable, x_key, y_key)
        for p in usable:
            name = legend_label(p)
            if id(p) in hidden:
                # markers on top of each other get their names around them, in turn upper
                # right, lower right, upper left, lower left
                dx, dy, ha = _NAME_PLACES[hidden[id(p)] % len(_NAME_PLACES)]
                ax.annotate(name, (p[x_key], p[y_key]), xytext=(dx, dy), textcoords="offset points", ha=ha,
                            fontsize=8, color=styles[name][0], fontweight="bold")
    return _save(fig, out_png)


def _frontier(ax, frontier: Sequence[Mapping], x_key: str, y_key: str) -> None:
    """The boundary of what the frontier's points dominate: down from the top of the axes
    to the first point, across and down through the others (a step), then right to the
    edge. Drawn above the error bars and below the markers, so it shows even where the
    frontier points sit close together."""
    if not frontier:
        return
    ax.autoscale_view()
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    xs = [frontier[0][x_key]] + [p[x_key] for p in frontier] + [x1]
    ys = [y1] + [p[y_key] for p in frontier] + [frontier[-1][y_key]]
    ax.step(xs, ys, where="post", ls="--", c="0.25", lw=1.4, zorder=2.8, label="Pareto frontier")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)


def curves_plot(run_metrics: Mapping[str, Sequence[Mapping]], out_png: str | Path, *,
                x: str = "tokens_seen",
                y: str | Sequence[str] = ("eval/misalignment", "eval/heldout_loss"),
                log_y: bool = True, title: str | None = None) -> Path:
    """Metrics vs training progress, one line per run, one panel per key in `y`.

    `run_metrics` maps a run name to its metrics.jsonl rows; rows lacking `x` or a
    given `y` key (e.g. train-loss lines) are skipped for that panel. Returns the path.
    """
    out_png = Path(out_png)
    keys = [y] if isinstance(y, str) else list(y)
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 4.2), layout="constrained",
                             squeeze=False)
    styles = run_styles(list(run_metrics))
    for ax, key in zip(axes[0], keys):
        plotted = []
        for run, rows in run_metrics.items():
            pts = sorted((r[x], r[key]) for r in rows if _is_number(r.get(x)) and _is_number(r.get(key)))
            if not pts:
                continue
            colour, marker = styles[run]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], c=colour, marker=marker,
                    ms=4, lw=1.5, label=run)
            plotted.extend(p[1] for p in pts)
        if plotted:
            _scale(ax, "y", plotted, log_y, key)
        ax.set_xlabel(_AXIS_LABELS.get(x, x))
        ax.set_ylabel(_AXIS_LABELS.get(key, key))
        ax.grid(True, which="both", alpha=0.3)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4), useMathText=True)
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize=9)
    if title:
        fig.suptitle(title)
    return _save(fig, out_png)


def _save(fig, out_png: Path) -> Path:
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return out_png


def red_team_plot(rounds: dict[str, list[dict]], out_png: Path) -> Path:
    """Expected max score per round, one line per run (whole-number rounds on x)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    styles = run_styles(list(rounds))
    for label, rows in rounds.items():
        colour, marker = styles[label]
        ax.plot([r["round"] for r in rows], [r["expected_max"] for r in rows], c=colour, marker=marker,
                ms=5, lw=1.5, label=label)
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_xlabel("red-teaming round (0: the seed prompts)")
    ax.set_ylabel("expected max score of the pool (lower is better)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=9)
    return _save(fig, out_png)
