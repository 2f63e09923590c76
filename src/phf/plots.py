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

#: fixed style per objective, so a colour means the same thing in every figure
_OBJECTIVE_STYLES = {
    "mle": ("tab:gray", "o"),
    "filtering": ("tab:blue", "s"),
    "conditional": ("tab:green", "^"),
    "unlikelihood": ("tab:red", "v"),
    "rwr": ("tab:purple", "D"),
    "awr": ("tab:orange", "P"),
}
_EXTRA_STYLES = [("tab:brown", "X"), ("tab:pink", "*"), ("tab:olive", "h"),
                 ("tab:cyan", "p"), ("black", "<"), ("tab:blue", ">")]

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


def _style(label: str, assigned: dict[str, tuple[str, str]]) -> tuple[str, str]:
    if label not in assigned:
        base = label.split("/")[0].split("+")[0].lower()
        if base in _OBJECTIVE_STYLES and _OBJECTIVE_STYLES[base] not in assigned.values():
            assigned[label] = _OBJECTIVE_STYLES[base]
        else:
            used = set(assigned.values())
            free = [s for s in _EXTRA_STYLES if s not in used] or _EXTRA_STYLES
            assigned[label] = free[0]
    return assigned[label]


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
    where matplotlib's default "1.4x10^1" labels run into each other."""
    if not log:
        return
    # A log axis cannot show 0 or negative values (misalignment can be 0, a KL
    # estimate can be slightly negative): fall back to linear and say so.
    if not values or any(v <= 0 for v in values):
        warnings.warn(f"{key} has values <= 0; using a linear scale", stacklevel=3)
        return
    getattr(ax, f"set_{which}scale")("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    # Within about a decade there are few major ticks, so label some minor ones:
    # all of them on a narrow range, else only 2x, 3x and 5x so they do not crowd.
    decades = math.log10(max(values) / min(values))
    if decades < 0.5:
        axis.set_minor_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    elif decades < 1.5:
        axis.set_minor_formatter(ticker.FuncFormatter(_label_2_3_5))
    else:
        axis.set_minor_formatter(ticker.NullFormatter())


def _label_2_3_5(value: float, _pos=None) -> str:
    mantissa = value / 10 ** math.floor(math.log10(value) + 1e-9)
    return f"{value:g}" if any(abs(mantissa - m) < 1e-6 for m in (2, 3, 5)) else ""


def _overlapping(points: Sequence[Mapping], x_key: str, y_key: str, log: bool) -> dict[int, int]:
    """{id(point): rank} of points within 2% of the axes' spans of another one (so their
    markers hide each other), ranked in drawing order within each cluster."""
    def coords(p):
        return [math.log10(p[k]) if log and p[k] > 0 else p[k] for k in (x_key, y_key)]

    xy = [coords(p) for p in points]
    spans = [max((c[i] for c in xy), default=0) - min((c[i] for c in xy), default=0) or 1.0 for i in (0, 1)]
    close = {}
    for i, a in enumerate(xy):
        near = [j for j, b in enumerate(xy) if all(abs(a[k] - b[k]) < 0.02 * spans[k] for k in (0, 1))]
        if len(near) > 1:
            close[id(points[i])] = near.index(i)
    return close


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

    One colour + marker per `label_key` value (the objective), each point annotated
    with its run name when that differs from its label, and the Pareto frontier
    (lower-left is better on both axes) drawn as a dashed step line. Points missing
    x or y are left out (with a warning). A point with `<key>_lo` and `<key>_hi` (its
    interval, e.g. 95% over seeds) gets an error bar on that axis; an axis whose
    intervals reach 0 or below is drawn linear. Returns the path written.
    """
    out_png = Path(out_png)
    usable = [p for p in points if _is_number(p.get(x_key)) and _is_number(p.get(y_key))]
    skipped = [str(p.get(name_key, p.get(label_key, "?"))) for p in points if p not in usable]
    if skipped:
        warnings.warn(f"no {x_key}/{y_key} for: {', '.join(skipped)}", stacklevel=2)

    fig, ax = plt.subplots(figsize=(7, 5), layout="constrained")
    styles: dict[str, tuple[str, str]] = {}
    hidden = _overlapping(usable, x_key, y_key, log)
    for label in dict.fromkeys(str(p.get(label_key, p.get(name_key, "?"))) for p in usable):
        group = [p for p in usable if str(p.get(label_key, p.get(name_key, "?"))) == label]
        colour, marker = _style(label, styles)
        for p in group:
            xerr, yerr = _error(p, x_key), _error(p, y_key)
            if xerr is not None or yerr is not None:
                ax.errorbar([p[x_key]], [p[y_key]], xerr=xerr, yerr=yerr, fmt="none", ecolor=colour,
                            elinewidth=1.3, capsize=3, alpha=0.85, zorder=2.5)
        ax.scatter([p[x_key] for p in group], [p[y_key] for p in group], s=70, c=colour,
                   marker=marker, label=label, edgecolors="black", linewidths=0.6, zorder=3)
        for p in group:
            name = str(p.get(name_key, ""))
            if name and (name != label or id(p) in hidden):
                # points drawn on top of each other get their names, one above, one below
                below = id(p) in hidden and hidden[id(p)] % 2
                ax.annotate(name, (p[x_key], p[y_key]), xytext=(6, -11 if below else 5),
                            textcoords="offset points", fontsize=8, color="0.25")

    frontier = pareto_frontier(usable, x_key, y_key)
    if len(frontier) > 1:
        ax.step([p[x_key] for p in frontier], [p[y_key] for p in frontier], where="post",
                ls="--", c="0.4", lw=1.2, zorder=2, label="Pareto frontier")

    _scale(ax, "x", _with_bounds(usable, x_key), log, x_key)
    _scale(ax, "y", _with_bounds(usable, y_key), log, y_key)
    ax.set_xlabel(_AXIS_LABELS.get(x_key, x_key))
    ax.set_ylabel(_AXIS_LABELS.get(y_key, y_key))
    ax.set_title(title or "misalignment vs capability (lower-left is better)")
    ax.grid(True, which="both", alpha=0.3)
    if usable:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=9)
    return _save(fig, out_png)


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
    styles: dict[str, tuple[str, str]] = {}
    for ax, key in zip(axes[0], keys):
        plotted = []
        for run, rows in run_metrics.items():
            pts = sorted((r[x], r[key]) for r in rows if _is_number(r.get(x)) and _is_number(r.get(key)))
            if not pts:
                continue
            colour, marker = _style(run, styles)
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
    styles: dict = {}
    for label, rows in rounds.items():
        colour, marker = _style(label, styles)
        ax.plot([r["round"] for r in rows], [r["expected_max"] for r in rows], c=colour, marker=marker,
                ms=5, lw=1.5, label=label)
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_xlabel("red-teaming round (0: the seed prompts)")
    ax.set_ylabel("expected max score of the pool (lower is better)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=9)
    return _save(fig, out_png)
