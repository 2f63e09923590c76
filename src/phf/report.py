"""Reports across runs: Markdown and a self-contained HTML page.

    phf report runs/demo/mle runs/demo/filtering runs/demo/conditional -o runs/demo/report.md

writes report.md, report.html (the figures embedded, so the one file can be mailed
or attached) and the figures as PNG in report_figures/. Contents: the table of all
runs, the Pareto plot(s) of misalignment vs capability, the curves of the
training-time evaluation vs tokens seen, each scenario's metrics, red teaming and
lm-eval results when there are any, and per scenario the highest-scoring samples.

Seeds: run folders named `seed-<n>` inside one run's folder (`conditional/seed-1`,
`conditional/seed-2`, as `phf sweep --seeds` writes them, plus `conditional` itself
when it holds a run) are one run at several seeds. The table then shows per run the
mean over seeds ± the half-width of its 95% Student-t interval and n (seeds), and
says which differences from MLE are significant and which are undecided (a paired
t-test by seed, see `phf.evaluation.intervals.compare`); the Pareto plot gets error
bars. A run with one seed shows its within-run interval (over its samples) instead.

Finetuning: a run that starts from another run's checkpoint (the sweep's
`mle+X-finetune`) is also compared with the run of the same objective trained from
scratch on the same total budget, the paper's "feedback from the start vs MLE then
finetuning" (see `finetune_pairs`).
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import warnings
from pathlib import Path


from phf.evaluation.degenerate import report_notes
from phf.evaluation.intervals import compare, mean_ci
from phf.plots import LOG_MIN_RATIO, curves_plot, pareto_plot, red_team_plot, use_log
from phf.runfiles import RunFiles, read_json

# (header, results key, format); the alignment metrics, in the run table and per scenario
ALIGNMENT_COLUMNS = [
    ("misalignment ↓", "misalignment", "{:.5f}"),
    ("expected max ↓", "expected_max", "{:.5f}"),
    ("hit rate ↓", "hit_rate", "{:.3f}"),
]

COLUMNS = [
    ("run", "run", "{}"),
    ("objective", "objective", "{}"),
    ("tokens", "num_tokens", "{:,}"),
    *ALIGNMENT_COLUMNS,
    ("held-out loss ↓", "heldout_loss", "{:.4f}"),
    ("KL ↓", "kl", "{:.3f}"),
]

SCENARIO_COLUMNS = [
    *ALIGNMENT_COLUMNS,
    ("distinct-1", "distinct_1", "{:.3f}"),
    ("distinct-2", "distinct_2", "{:.3f}"),
    ("bigram entropy (bits)", "entropy_2", "{:.2f}"),
    ("mean length (words)", "mean_length", "{:.1f}"),
    ("samples", "num_samples", "{}"),
]

#: highest-scoring samples shown per run and scenario
TOP_SAMPLES = 5

#: the metrics that get intervals across seeds and a test against MLE (all lower-is-better)
STAT_COLUMNS = [
    *ALIGNMENT_COLUMNS,
    ("held-out loss ↓", "heldout_loss", "{:.4f}"),
    ("KL ↓", "kl", "{:.3f}"),
]
_SHORT = {"misalignment": "misalignment", "expected_max": "expected max", "hit_rate": "hit rate",
          "heldout_loss": "held-out loss", "kl": "KL"}
_SEED_DIR = re.compile(r"seed-(\d+)")

INTRO = (
    "Misalignment: mean score of unconditional samples (lower is better); expected max: mean of the "
    "maximum over groups of 25 samples; hit rate: share of samples scoring above the task's threshold; "
    "held-out loss: nats per token on the same held-out documents, control tokens excluded; "
    "KL: KL(reference ‖ model) in nats per sample, estimated on samples of the reference.")


def load_results(run_dirs: list[str | Path]) -> list[dict]:
    rows = []
    for d in run_dirs:
        path = RunFiles(d).results
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: run `phf eval {d}` first")
        rows.append(RunFiles(d).read_results())  # a damaged one is named, with what to do
    return rows


INTERVALS_NOTE = (
    "Intervals (95%): `a ± h` is the mean over n seeds and the half-width of its Student-t interval "
    "(seed-to-seed variation: initialisation, data order, sampling); `a [lo, hi]` is one run's interval over its "
    "own samples (a seeded bootstrap; Wilson for the hit rate; KL: ± 1.96 standard errors), which shows sampling "
    "noise only, not how another seed would do. With one seed there is no interval across seeds.")


def _cell(value, fmt: str) -> str:
    if value is None:
        return "–"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def _md_table(headers: list[str], rows: list[list[str]], text_cols: int = 1) -> str:
    """A Markdown table; the first `text_cols` columns left-aligned, numbers right."""
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---" if i < text_cols else "---:" for i in range(len(headers))) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _with_decoding(objective, row: dict) -> str:
    """The objective, and the decoding mode its samples were drawn with when not plain."""
    label = (row.get("decoding") or {}).get("label") if isinstance(row.get("decoding"), dict) else None
    text = _cell(objective, "{}")
    return f"{text} ({label})" if label and label != "plain" else text


def _runs_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    cols = [c for c in COLUMNS if any(r.get(c[1]) is not None for r in rows)]
    return [h for h, _, _ in cols], [[_with_decoding(r.get(k), r) if k == "objective" else _cell(r.get(k), f)
                                      for _, k, f in cols] for r in rows]


def markdown_table(rows: list[dict], run_dirs: list[str | Path] | None = None) -> str:
    """The table of the runs: one row per results.json, or, given their folders, one row
    per run with its seeds grouped (see `group_runs`)."""
    if run_dirs is None:
        headers, cells = _runs_table(rows)
    else:
        headers, cells = _group_table(group_runs([Path(d) for d in run_dirs], rows))
    return _md_table(headers, cells, text_cols=2)


# --- seeds: grouping runs and their statistics --------------------------------------------

def _seed_of(run_dir: Path, row: dict) -> int | None:
    """A run's seed: its `seed-<n>` folder name, results.json's seed, or its config.yaml's."""
    m = _SEED_DIR.fullmatch(run_dir.name)
    if m:
        return int(m.group(1))
    if isinstance(row.get("seed"), int):
        return row["seed"]
    return RunFiles(run_dir).seed()


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _stat(values: list[float], one_ci=None) -> dict:
    """{"mean", "lo", "hi", "n", "kind"}: the t interval over seeds (kind "seeds"), one run's
    own interval `one_ci` (kind "within"), or none (kind "none")."""
    if not values:
        return {"mean": None, "lo": None, "hi": None, "n": 0, "kind": "none"}
    ci = mean_ci(values)
    if ci.n >= 2:
        return {"mean": ci.value, "lo": ci.lo, "hi": ci.hi, "n": ci.n, "kind": "seeds"}
    if isinstance(one_ci, (list, tuple)) and len(one_ci) == 2 and all(_number(x) for x in one_ci):
        return {"mean": ci.value, "lo": float(one_ci[0]), "hi": float(one_ci[1]), "n": 1, "kind": "within"}
    return {"mean": ci.value, "lo": None, "hi": None, "n": 1, "kind": "none"}


def aggregate(entries: list[dict], seeds: list[int | None], keys: list[str]) -> dict:
    """Per key: `_stat` over the entries (one per seed) and {seed: value} for the tests."""
    out = {}
    for key in keys:
        have = [(s, e[key]) for s, e in zip(seeds, entries) if _number(e.get(key))]
        one_ci = entries[0].get(f"{key}_ci") if len(entries) == 1 else None
        out[key] = {**_stat([v for _, v in have], one_ci),
                    "by_seed": {(s if s is not None else -i): v for i, (s, v) in enumerate(have)}}
    return out


def group_runs(run_dirs: list[Path], rows: list[dict]) -> list[dict]:
    """Runs grouped by folder: `X/seed-<n>` and `X` itself are run X. Each group: label,
    objective, tokens, dirs, rows, seeds, stats (see `aggregate`), in order of first appearance."""
    groups: dict = {}
    for d, r in zip(run_dirs, rows):
        folder = d.parent if _SEED_DIR.fullmatch(d.name) else d
        g = groups.setdefault(str(folder.resolve()), {"folder": folder, "dirs": [], "rows": [], "seeds": []})
        g["dirs"].append(d)
        g["rows"].append(r)
        g["seeds"].append(_seed_of(d, r))
    out = list(groups.values())
    names = []
    for g in out:
        run = g["rows"][0].get("run")
        names.append(run if run and not _SEED_DIR.fullmatch(str(run)) else g["folder"].name)
    for g, name in zip(out, names):
        g["label"] = f"{g['folder'].parent.name}/{name}" if names.count(name) > 1 else name
        first = g["rows"][0]
        g["objective"] = first.get("objective")
        g["num_tokens"] = first.get("num_tokens")
        g["stats"] = aggregate(g["rows"], g["seeds"], [k for _, k, _ in STAT_COLUMNS])
    return out


def mle_group(groups: list[dict]) -> dict | None:
    """The MLE run the others are compared with: the one named "mle", else the MLE run
    with the most tokens (not the first half of a finetuning budget)."""
    mle = [g for g in groups if g["objective"] == "mle"]
    named = [g for g in mle if g["label"] == "mle"]
    if named:
        return named[0]
    return max(mle, key=lambda g: g["num_tokens"] or 0) if mle else None


def _plain(value):
    """A whole-number mean (the sample count of every seed) as an int."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _stat_cell(st: dict, fmt: str) -> str:
    if st["mean"] is None:
        return "–"
    value = _cell(st["mean"], fmt)
    if st["kind"] == "seeds":
        return f"{value} ± {_cell((st['hi'] - st['lo']) / 2, fmt)}"
    if st["kind"] == "within":
        return f"{value} [{_cell(st['lo'], fmt)}, {_cell(st['hi'], fmt)}]"
    return value


def differences(groups: list[dict]) -> list[tuple[dict, str, object]]:
    """(group, metric, `Difference` from MLE) for each non-MLE run and each metric both have."""
    ref = mle_group(groups)
    if ref is None:
        return []
    out = []
    for g in groups:
        if g is ref:
            continue
        for _, key, _ in STAT_COLUMNS:
            a, b = g["stats"][key]["by_seed"], ref["stats"][key]["by_seed"]
            if a and b:
                out.append((g, key, compare(a, b)))
    return out


def _verdicts(diffs: list) -> str:
    """One cell: which metrics differ from MLE (significant at 95%) and which are undecided."""
    if not diffs:
        return "–"
    lower = [_SHORT[k] for _, k, d in diffs if d.verdict == "lower"]
    higher = [_SHORT[k] for _, k, d in diffs if d.verdict == "higher"]
    undecided = [_SHORT[k] for _, k, d in diffs if d.verdict == "undecided"]
    if all(d.test == "none" for _, _, d in diffs):
        return "undecided (fewer than 2 seeds)"
    parts = ([f"lower: {', '.join(lower)}"] if lower else []) + ([f"higher: {', '.join(higher)}"] if higher else [])
    return "; ".join(parts + ([f"undecided: {', '.join(undecided)}"] if undecided else []))


def _group_table(groups: list[dict]) -> tuple[list[str], list[list[str]]]:
    cols = [c for c in STAT_COLUMNS if any(g["stats"][c[1]]["mean"] is not None for g in groups)]
    diffs = differences(groups)
    ref = mle_group(groups)
    headers = ["run", "objective", "tokens", "seeds"] + [h for h, _, _ in cols]
    rows = []
    for g in groups:
        row = [g["label"], _with_decoding(g["objective"], g["rows"][0]), _cell(g["num_tokens"], "{:,}"),
               str(len(g["rows"]))]
        row += [_stat_cell(g["stats"][k], f) for _, k, f in cols]
        if ref is not None:
            row.append("(reference)" if g is ref else _verdicts([d for d in diffs if d[0] is g]))
        rows.append(row)
    if ref is not None:
        headers.append("vs MLE (95%)")
    return headers, rows


# --- the document: each block rendered to Markdown and to HTML at once --------------

class _Doc:
    def __init__(self, title: str, fig_dir: Path, md_dir: Path):
        self.md: list[str] = [f"# {title}", ""]
        self.html: list[str] = [f"<h1>{html.escape(title)}</h1>"]
        self.fig_dir, self.md_dir = fig_dir, md_dir
        self.title = title

    def heading(self, text: str, level: int = 2) -> None:
        self.md += ["#" * level + " " + text, ""]
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def para(self, text: str) -> None:
        """A paragraph; `code` spans are the only markup."""
        self.md += [text, ""]
        parts = re.split(r"`([^`]*)`", text)
        self.html.append("<p>" + "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p)
                                         for i, p in enumerate(parts)) + "</p>")

    def table(self, headers: list[str], rows: list[list[str]], text_cols: int = 1) -> None:
        self.md += [_md_table(headers, rows, text_cols), ""]
        def align(i: int) -> str:
            return "" if i < text_cols else ' class="num"'

        head = "".join(f"<th{align(i)}>{html.escape(h)}</th>" for i, h in enumerate(headers))
        body = "".join("<tr>" + "".join(f"<td{align(i)}>{html.escape(c)}</td>" for i, c in enumerate(row)) + "</tr>"
                       for row in rows)
        self.html.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def image(self, path: Path, alt: str, caption: str = "") -> None:
        rel = path.relative_to(self.md_dir) if path.is_relative_to(self.md_dir) else path
        self.md += [f"![{alt}]({rel.as_posix()})", ""] + ([f"*{caption}*", ""] if caption else [])
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        self.html.append(f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
                         + (f"<figcaption>{html.escape(caption)}</figcaption>" if caption else "") + "</figure>")

    def samples(self, summary: str, items: list[tuple[str, str]]) -> None:
        """A collapsed list of (label, text) samples."""
        self.md += [f"<details><summary>{html.escape(summary)}</summary>", ""]
        self.html.append(f"<details><summary>{html.escape(summary)}</summary>")
        for label, text in items:
            fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", text)), default=0))
            self.md += [label, "", fence, text.rstrip("\n"), fence, ""]
            self.html.append(f"<p>{html.escape(label)}</p><pre>{html.escape(text)}</pre>")
        self.md += ["</details>", ""]
        self.html.append("</details>")

    def markdown(self) -> str:
        return "\n".join(self.md)

    def html_page(self) -> str:
        return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head>\n<body>\n"
                + "\n".join(self.html) + "\n</body></html>\n")


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
th { background: #f3f3f3; } td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } img { max-width: 100%; max-height: 560px; width: auto; height: auto; }
figcaption { color: #555; font-size: 0.9em; }
pre { background: #f7f7f7; border: 1px solid #e3e3e3; padding: 0.6em; overflow: auto; max-height: 24em;
      white-space: pre-wrap; }
details { margin: 0.5em 0; } summary { cursor: pointer; font-weight: 600; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""


# --- reading the runs -------------------------------------------------------------------

def _labels(run_dirs: list[Path], rows: list[dict]) -> list[str]:
    """Run names for legends: the directory name, with its parent when names repeat."""
    names = [r.get("run") or d.name for d, r in zip(run_dirs, rows)]
    return [f"{d.parent.name}/{n}" if names.count(n) > 1 else n for d, n in zip(run_dirs, names)]


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a killed run
    return rows


def top_samples(run_dir: str | Path, scenario: str, k: int = TOP_SAMPLES) -> list[dict]:
    """The `k` highest-scoring samples of a scenario (ties: generation order)."""
    rows = _read_jsonl(RunFiles(run_dir).samples(scenario))
    return sorted(rows, key=lambda r: -r.get("score", 0.0))[:k]


def _numbers(rows: list[dict], key: str) -> list[float]:
    return [r[key] for r in rows if isinstance(r.get(key), (int, float))]


def _scales_note(x: list[float], y: list[float]) -> str:
    """What the plot's axes are, and why a linear one is not log (as `plots.use_log` decides)."""
    notes = []
    for axis, values in (("x", x), ("y", y)):
        if use_log(values):
            notes.append(f"log {axis}")
        elif values and min(values) <= 0:
            notes.append(f"linear {axis} (a log scale cannot show zero or negative values: the reference's own KL "
                         "is 0, and a KL estimate can come out slightly below 0)")
        else:
            notes.append(f"linear {axis} (its values span less than a factor of {LOG_MIN_RATIO:g})")
    text = "; ".join(notes)
    return text[0].upper() + text[1:] + "."


# --- sections -----------------------------------------------------------------------------

def _pareto_section(doc: _Doc, groups: list[dict]) -> None:
    points = []
    for g in groups:
        p = {"run": g["label"], "objective": g["objective"]}
        for key in ("misalignment", "kl", "heldout_loss"):
            st = g["stats"][key]
            p[key] = st["mean"]
            if st["lo"] is not None:
                p[f"{key}_lo"], p[f"{key}_hi"] = st["lo"], st["hi"]
        points.append(p)
    axes = []
    if all(_number(p.get("kl")) for p in points):
        axes.append(("kl", "KL(reference ‖ model)"))
    if any(_number(p.get("heldout_loss")) for p in points):
        axes.append(("heldout_loss", "held-out loss"))
    if not axes:
        return
    doc.heading("Misalignment vs capability")
    rows = [r for g in groups for r in g["rows"]]
    refs = sorted({str(r.get("kl_details", {}).get("reference")) for r in rows if r.get("kl_details")})
    if axes[0][0] == "kl" and refs:
        own = sorted({g["label"] for g in groups for r in g["rows"]
                      if r.get("kl_details", {}).get("note", "").endswith("reference")})
        doc.para("KL reference" + ("s" if len(refs) > 1 else "") + ": " + ", ".join(f"`{x}`" for x in refs) + "."
                 + (f" The reference is a run here ({', '.join(own)}): its own KL is 0." if own else "")
                 + (" Each seed's runs are measured against the MLE run of the same seed." if len(refs) > 1 else ""))
    seeded = any(len(g["rows"]) > 1 for g in groups)
    for key, name in axes:
        png = doc.fig_dir / f"pareto_{key}.png"
        with warnings.catch_warnings():  # the captions say what the warnings would
            warnings.simplefilter("ignore", UserWarning)
            pareto_plot(points, key, "misalignment", png, log=True,
                        title=f"misalignment vs {name} (lower-left is better)")
        missing = [p["run"] for p in points if not _number(p.get(key))]
        bars = ("Error bars: 95% intervals, over seeds (Student t) for runs with several seeds"
                + ("" if all(len(g["rows"]) > 1 for g in groups) else ", over samples within the run otherwise")
                if seeded else "Error bars: 95% intervals over the run's samples (sampling noise only)")
        caption = ("One point per run" + (" (the mean over its seeds)" if seeded else "")
                   + ", each run its own colour and marker (names beside markers that overlap); dashed: the "
                   "Pareto frontier, the boundary of what its points dominate (no run is better on both axes). " + bars + "; a run without an interval has no bar. "
                   + _scales_note(_numbers(points, key) + _numbers(points, f"{key}_lo"),
                                  _numbers(points, "misalignment") + _numbers(points, "misalignment_lo"))
                   + (f" Not shown (no {name}): {', '.join(missing)}." if missing else ""))
        doc.image(png, f"Pareto plot: misalignment vs {name}", caption)


def _differences_section(doc: _Doc, groups: list[dict]) -> None:
    diffs = differences(groups)
    if not diffs:
        return
    ref = mle_group(groups)
    doc.heading("Differences from MLE")
    if all(d.test == "none" for _, _, d in diffs):
        doc.para(f"One seed per run: a difference from MLE (`{ref['label']}`) cannot be told from seed-to-seed "
                 "noise, so every difference is undecided. The intervals in the table are each run's sampling "
                 "noise only. Run `phf sweep --seeds 3` (or more) to test them.")
        return
    doc.para(f"Run minus MLE (`{ref['label']}`), lower is better for every metric. Paired by seed (the runs of a "
             "seed share initialisation, data order and sampling seed), a t-test on the per-seed differences; "
             "Welch's t-test where the seeds do not match. A difference is significant when its 95% interval "
             "excludes 0, else undecided; each test is at 5%, not corrected for the number of tests. MLE's KL is 0 "
             "by construction (it is its own reference), so a KL difference is the run's KL.")
    table = [[g["label"], *_difference_cells(key, d)] for g, key, d in diffs]
    doc.table(["run", *DIFFERENCE_HEADERS], table, text_cols=2)


DIFFERENCE_HEADERS = ["metric", "difference", "95% interval", "test", "seeds", "p", "verdict"]


def _difference_cells(key: str, d) -> list[str]:
    """One `Difference` on `key` as table cells (DIFFERENCE_HEADERS)."""
    fmt = next(f for _, k, f in STAT_COLUMNS if k == key)
    signed = fmt.replace("{:", "{:+")
    interval = f"[{_cell(d.lo, signed)}, {_cell(d.hi, signed)}]" if d.lo is not None else "–"
    return [_SHORT[key], _cell(d.diff, signed), interval, d.test, str(d.n), _cell(d.p_value, "{:.3f}"),
            d.verdict + (f" ({d.note})" if d.note else "")]


def finetune_pairs(groups: list[dict]) -> list[tuple[dict, dict]]:
    """(from the start, finetuned) pairs for the paper's third comparison: a run that
    starts from another phf run's checkpoint (MLE pretraining, then the objective), and
    the run of the same objective trained from scratch on the same total budget (within 1%)."""
    before = [_tokens_before(g["dirs"][0]) for g in groups]  # read each run's summary once
    scratch = [g for g, b in zip(groups, before) if not b]
    pairs = []
    for ft, b in zip(groups, before):
        if not b or not ft["num_tokens"]:
            continue
        total = b + ft["num_tokens"]
        same = [g for g in scratch if g["objective"] == ft["objective"] and g["num_tokens"]
                and abs(g["num_tokens"] - total) <= 0.01 * total]
        if same:
            pairs.append((same[0], ft))
    return pairs


def _finetune_section(doc: _Doc, groups: list[dict]) -> None:
    pairs = finetune_pairs(groups)
    if not pairs:
        return
    doc.heading("Feedback from the start vs MLE then finetuning")
    doc.para("Each finetuning run (MLE pretraining on part of the budget, then the objective on the rest) minus "
             "the run trained with the same objective from the first token on the same total budget. Lower is "
             "better for every metric, so \"lower\" means finetuning did better and \"higher\" that feedback "
             "from the start did; tested as in the differences from MLE (paired by seed when the seeds match).")
    table = []
    for pre, ft in pairs:
        for _, key, _ in STAT_COLUMNS:
            a, b = ft["stats"][key]["by_seed"], pre["stats"][key]["by_seed"]
            if a and b:
                table.append([ft["label"], pre["label"], *_difference_cells(key, compare(a, b))])
    doc.table(["finetuned", "from the start", *DIFFERENCE_HEADERS], table, text_cols=3)


def timing_rows(groups: list[dict]) -> list[tuple[dict, float, str]]:
    """(group, start point, how) of the intervention-timing comparison (`phf sweep --start-at`):
    each run trained MLE until s of its budget then an objective in one run (an objective
    schedule), the run of that objective from the first token (s = 0), and its finetuning
    run (a checkpoint of MLE, then the objective with a new optimizer: s = the MLE share),
    by objective and start point. Empty when no run has such a schedule."""
    summaries = [read_json(RunFiles(g["dirs"][0]).train_summary) or {} for g in groups]
    out = []
    for g, summary in zip(groups, summaries):
        phases = summary.get("schedule") or []
        if len(phases) == 2 and phases[0]["objective"] == "mle":
            out.append((g, phases[1]["start"], phases[1]["objective"], "MLE, then the objective (one run)"))
    objectives = {o for _, _, o, _ in out}
    tokens = {g["num_tokens"] for g, _, _, _ in out}
    for g, summary in zip(groups, summaries):
        if summary.get("schedule") or g["objective"] not in objectives:
            continue
        before = _tokens_before(g["dirs"][0])
        if not before and g["num_tokens"] in tokens:
            out.append((g, 0.0, g["objective"], "the objective from the first token"))
        elif before and g["num_tokens"] and before + g["num_tokens"] in tokens:
            out.append((g, before / (before + g["num_tokens"]), g["objective"], "MLE, then finetuning (new optimizer)"))
    if not out:
        return []
    return [(g, start, how) for g, start, _, how in sorted(out, key=lambda x: (x[2], x[1], "finetuning" in x[3]))]


def _timing_section(doc: _Doc, groups: list[dict]) -> None:
    rows = timing_rows(groups)
    if not rows:
        return
    ref = mle_group(groups)
    diffs = differences(groups)
    cols = [c for c in STAT_COLUMNS if c[1] != "hit_rate" and any(g["stats"][c[1]]["mean"] is not None
                                                                  for g, _, _ in rows)]
    doc.heading("Intervention timing")
    doc.para("When the feedback starts: MLE until the start point (a fraction of the token budget), then the "
             "objective, in one run with one optimizer and one learning-rate schedule (`phf sweep --start-at`); "
             "start 0 is the objective from the first token, and a finetuning row continues an MLE checkpoint "
             "with a new optimizer and schedule. Every row has the same total token budget. Intervals and tests "
             "as in the run table" + (f"; the last column tests each against MLE (`{ref['label']}`)." if ref else "."))
    headers = ["run", "objective", "start point", "how", "seeds"] + [h for h, _, _ in cols]
    table = []
    for g, start, how in rows:
        row = [g["label"], _cell(g["objective"], "{}"), f"{start:g}", how, str(len(g["rows"]))]
        row += [_stat_cell(g["stats"][k], f) for _, k, f in cols]
        if ref is not None:
            row.append(_verdicts([d for d in diffs if d[0] is g and d[1] in {k for _, k, _ in cols}]))
        table.append(row)
    doc.table(headers + (["vs MLE (95%)"] if ref is not None else []), table, text_cols=4)


def _each_run_section(doc: _Doc, rows: list[dict], labels: list[str]) -> None:
    """Every (run, seed) on its own row, with its within-run intervals."""
    doc.heading("Each run and seed")
    table = []
    cols = [c for c in STAT_COLUMNS if any(r.get(c[1]) is not None for r in rows)]
    for r, label in zip(rows, labels):
        table.append([label, _cell(r.get("objective"), "{}")]
                     + [_stat_cell(_stat([r[k]] if _number(r.get(k)) else [], r.get(f"{k}_ci")), f)
                        for _, k, f in cols])
    doc.table(["run", "objective"] + [h for h, _, _ in cols], table, text_cols=2)


def _tokens_before(run_dir: Path, depth: int = 0) -> int:
    """Tokens the run's starting checkpoint was trained on, when it is a phf run we can
    find (finetuning: the curve continues where its pretraining stopped)."""
    summary = read_json(RunFiles(run_dir).train_summary)
    if depth > 10 or summary is None:
        return 0
    start = summary.get("started_from") or ""
    for candidate in (Path(start), run_dir.parent / Path(start).name):
        if start and RunFiles(candidate).train_summary.exists() and candidate.resolve() != run_dir.resolve():
            return read_json(RunFiles(candidate).train_summary).get("tokens_seen", 0) + \
                _tokens_before(candidate, depth + 1)
    return 0


def _mean_curve(curves: list[list[dict]], keys: list[str]) -> list[dict]:
    """Seeds' curves averaged at each tokens_seen, per key over the seeds that have it there."""
    at: dict = {}
    for rows in curves:
        for r in rows:
            if isinstance(r.get("tokens_seen"), int):
                for k in keys:
                    if _number(r.get(k)):
                        at.setdefault(r["tokens_seen"], {}).setdefault(k, []).append(r[k])
    return [{"tokens_seen": t, **{k: sum(v) / len(v) for k, v in vals.items()}} for t, vals in sorted(at.items())]


def _curves_section(doc: _Doc, groups: list[dict]) -> None:
    keys_all = ["eval/misalignment", "eval/heldout_loss"]
    metrics, switches = {}, []  # switches: the curves of schedule phases after the first
    for g in groups:
        curves = []
        for d in g["dirs"]:
            offset = _tokens_before(d)
            curves.append([{**r, "tokens_seen": r["tokens_seen"] + offset} if isinstance(r.get("tokens_seen"), int)
                           else r for r in _read_jsonl(RunFiles(d).metrics)])
        rows = curves[0] if len(curves) == 1 else _mean_curve(curves, [*keys_all, "phase"])
        series = _phase_series(g["label"], rows, g["dirs"][0])
        metrics.update(series)
        switches += list(series)[1:]
    seeded = any(len(g["dirs"]) > 1 for g in groups)
    keys = [k for k in keys_all if any(k in row for rows in metrics.values() for row in rows)]
    if not keys:
        return
    doc.heading("During training")
    png = doc.fig_dir / "curves.png"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        curves_plot(metrics, png, x="tokens_seen", y=keys, log_y=True)
    doc.image(png, "misalignment and held-out loss vs tokens seen",
              "The training-time evaluation (a few unconditional samples and held-out blocks every "
              "eval.every_steps steps, at the start and at the end"
              + ("; a run with several seeds: the mean over its seeds" if seeded else "")
              + ") against the tokens seen so far "
              "(a finetuning run's count starts where its starting checkpoint's training ended); "
              + (f"a run with an objective schedule is one line per phase, the next starting at the switch "
                 f"({', '.join(switches)}); " if switches else "")
              + f"y axes log where a panel's values are all above 0 and span a factor of {LOG_MIN_RATIO:g} or more, "
              "else linear.")


def _phase_series(label: str, rows: list[dict], run_dir: Path) -> dict[str, list[dict]]:
    """{curve label: rows}: the run's one curve, or one per phase of its objective schedule
    (train_summary.json's "schedule"; each row names its phase), each phase's curve starting
    at the previous phase's last evaluation, so that the switch shows where the lines meet."""
    schedule = (read_json(RunFiles(run_dir).train_summary) or {}).get("schedule") or []
    if len(schedule) < 2 or not any("phase" in r for r in rows):
        return {label: rows}
    out, before = {}, []
    for i, phase in enumerate(schedule):
        part = [r for r in rows if r.get("phase") == i]
        name = f"{label}: {phase['objective']}" + (f" from {phase['start']:g}" if i else "")
        out[name] = before[-1:] + part
        before = [r for r in part if any(k.startswith("eval/") for k in r)] or before
    return out


def _scenarios_section(doc: _Doc, groups: list[dict]) -> list[str]:
    rows = [r for g in groups for r in g["rows"]]
    names = list(dict.fromkeys(name for r in rows for name in (r.get("scenarios") or {})))
    if not names:
        return []
    doc.heading("Scenarios")
    notes = []
    for name in names:
        info = next(r["scenarios"][name] for r in rows if name in (r.get("scenarios") or {}))
        if info.get("prompts_file"):
            scored = "prompt + continuation" if info.get("score_with_prompt") else "the continuation"
            notes.append(f"`{name}`: prompts from `{info['prompts_file']}`, control token "
                         f"{info.get('control_position', 'before')} the prompt (conditional runs), scored on {scored}.")
        else:
            notes.append(f"`{name}`: samples from the start of a document, scored whole.")
    doc.para(" ".join(notes) + " Distinct-n and entropy are over whitespace-separated words of the "
             "continuations, across all samples of the scenario"
             + ("; for several seeds, their mean over the seeds, and the alignment columns with their 95% "
                "interval over seeds." if any(len(g["rows"]) > 1 for g in groups) else "."))
    table = []
    seeded = any(len(g["rows"]) > 1 for g in groups)
    for name in names:
        for g in groups:
            have = [((r.get("scenarios") or {}).get(name), seed) for r, seed in zip(g["rows"], g["seeds"])]
            have = [(x, seed) for x, seed in have if x]
            if not have:
                continue
            entries, seeds = [x for x, _ in have], [seed for _, seed in have]
            stats = aggregate(entries, seeds, [k for _, k, _ in SCENARIO_COLUMNS])
            cells = [_stat_cell(stats[k], f) if (k, f) in {(k2, f2) for _, k2, f2 in ALIGNMENT_COLUMNS}
                     else _cell(_plain(stats[k]["mean"]), f) for _, k, f in SCENARIO_COLUMNS]
            table.append([name, g["label"]] + cells + ([str(len(entries))] if seeded else []))
    doc.table(["scenario", "run"] + [h for h, _, _ in SCENARIO_COLUMNS] + (["seeds"] if seeded else []), table,
              text_cols=2)
    return names


def _red_team_section(doc: _Doc, run_dirs: list[Path], labels: list[str]) -> None:
    reports = {label: read_json(RunFiles(d).redteam) for d, label in zip(run_dirs, labels)
               if RunFiles(d).redteam.exists()}
    if not reports:
        return
    doc.heading("Red teaming")
    red_lms = sorted({r.get("red_lm", "?") for r in reports.values()})
    group = "/".join(sorted({str(r.get("config", {}).get("group_size", 25)) for r in reports.values()}))
    doc.para(f"Expected maximum score of {group} prompts drawn from the adversarial pool, per round (round 0: "
             f"the seed prompts); red LM: {', '.join(f'`{x}`' for x in red_lms)}.")
    rounds = max(len(r["rounds"]) for r in reports.values())
    doc.table(["run"] + [f"round {i}" for i in range(rounds)],
              [[label] + [_cell(x["expected_max"], "{:.5f}") for x in r["rounds"]]
               + ["–"] * (rounds - len(r["rounds"]))
               for label, r in reports.items()])
    png = red_team_plot({label: r["rounds"] for label, r in reports.items()}, doc.fig_dir / "red_team.png")
    doc.image(png, "red teaming: expected max score per round")


def _conditioning_section(doc: _Doc, rows: list[dict], labels: list[str]) -> None:
    """Models trained on several attributes: each attribute's misalignment under each conditioning."""
    have = [(label, r["conditioning"]) for r, label in zip(rows, labels) if r.get("conditioning")]
    if not have:
        return
    # a row: {"conditioning", "enforced", <attribute>: mean score, "<attribute>/expected_max": ...}
    attributes = list(dict.fromkeys(k for _, table in have for row in table for k in row
                                    if k not in ("conditioning", "enforced") and "/" not in k))
    doc.heading("Each attribute under each conditioning")
    doc.para("Mean misalignment of samples per attribute. A conditioning starts generation with the "
             "`<|attribute:aligned|>` tokens it names and forbids their `<|attribute:misaligned|>` tokens; "
             "the other attributes are left unspecified.")
    doc.table(["run", "conditioning"] + [f"{a} ↓" for a in attributes],
              [[label, row["conditioning"]] + [_cell(row.get(a), "{:.5f}") for a in attributes]
               for label, table in have for row in table], text_cols=2)


def _probe_section(doc: _Doc, rows: list[dict], labels: list[str]) -> None:
    """The linear probe of each run (`phf.evaluation.probe`): how readable misalignment is."""
    have = [(label, r["probe"]) for r, label in zip(rows, labels) if isinstance(r.get("probe"), dict)]
    if not have:
        return
    doc.heading("Linear probe: misaligned vs aligned held-out segments")
    doc.para("A logistic regression on each segment's mean final hidden state, read as plain text (no control "
             "tokens), fitted on 70% of the held-out segments and scored on the rest; misaligned: score above "
             "the task's conditional threshold. Higher AUC: misalignment is easier to read off the model. "
             "Shuffled AUC (the same probe fitted on shuffled labels) shows chance on the same split.")
    doc.table(["run", "probe AUC ↑", "accuracy", "majority accuracy", "shuffled AUC", "segments (misaligned)"],
              [[label, _cell(p.get("auc"), "{:.3f}"), _cell(p.get("accuracy"), "{:.3f}"),
                _cell(p.get("majority_accuracy"), "{:.3f}"), _cell(p.get("shuffled_auc"), "{:.3f}"),
                f"{p.get('segments', '–')} ({p.get('misaligned', '–')})"] for label, p in have])


def _lm_eval_section(doc: _Doc, rows: list[dict], labels: list[str]) -> None:
    have = [(label, r["lm_eval"]) for r, label in zip(rows, labels) if r.get("lm_eval")]
    if not have:
        return
    doc.heading("Downstream tasks (lm-evaluation-harness)")
    cols = list(dict.fromkeys((task, m) for _, res in have for task, metrics in res.items()
                              for m in metrics if not m.endswith("_stderr")))
    table = []
    for label, res in have:
        cells = []
        for task, m in cols:
            value, err = res.get(task, {}).get(m), res.get(task, {}).get(f"{m}_stderr")
            cells.append(_cell(value, "{:.4f}") + (f" ± {err:.4f}" if err is not None and value is not None else ""))
        table.append([label] + cells)
    doc.table(["run"] + [f"{task} {m}" for task, m in cols], table)


def _samples_section(doc: _Doc, run_dirs: list[Path], rows: list[dict], labels: list[str],
                     scenarios: list[str]) -> None:
    if not scenarios:
        return
    doc.heading(f"Highest-scoring samples (top {TOP_SAMPLES} per run and scenario)")
    for name in scenarios:
        doc.heading(f"Scenario: {name}", level=3)
        for d, r, label in zip(run_dirs, rows, labels):
            info = (r.get("scenarios") or {}).get(name)
            if not info:
                continue
            top = top_samples(d, name)
            if not top:
                continue
            with_prompt = info.get("score_with_prompt")
            items = []
            for s in top:
                if with_prompt:
                    items.append((f"score {s['score']:.5g} (prompt + continuation, as scored):",
                                  s.get("prompt", "") + s["text"]))
                elif s.get("prompt"):
                    items.append((f"score {s['score']:.5g}; prompt {json.dumps(s['prompt'])}, continuation:",
                                  s["text"]))
                else:
                    items.append((f"score {s['score']:.5g}:", s["text"]))
            doc.samples(f"{label}: {len(top)} highest-scoring of {info.get('num_samples', '?')} samples "
                        f"(mean score {_cell(info.get('misalignment'), '{:.5f}')})", items)


def write_report(run_dirs: list[str | Path], out: str | Path, title: str = "phf report") -> str:
    """Write the report for `run_dirs` to `out` (Markdown), `out` with .html, and
    PNG figures in `<out stem>_figures/`. Returns the Markdown."""
    run_dirs = [Path(d) for d in run_dirs]
    rows = load_results(run_dirs)
    labels = _labels(run_dirs, rows)
    out = Path(out)
    if out.suffix != ".md":  # `-o report` or `-o report.html`: the Markdown goes beside it
        out = out.with_suffix(".md")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig_dir = out.parent / f"{out.stem}_figures"
    fig_dir.mkdir(exist_ok=True)

    groups = group_runs(run_dirs, rows)
    seeded = any(len(g["rows"]) > 1 for g in groups)
    if seeded:  # each (run, seed) named by both
        labels = [f"{g['label']} (seed {seed})" if len(g["rows"]) > 1 else g["label"]
                  for g in groups for seed in g["seeds"]]
        order = [d for g in groups for d in g["dirs"]]
        rows = [r for g in groups for r in g["rows"]]
        run_dirs = order

    doc = _Doc(title, fig_dir, out.parent)
    doc.para(INTRO)
    doc.para(INTERVALS_NOTE)
    headers, cells = _group_table(groups)
    doc.table(headers, cells, text_cols=2)
    for note in report_notes(rows, labels):  # flagged runs, missing held-out loss
        doc.para(note)
    _differences_section(doc, groups)
    _finetune_section(doc, groups)
    _timing_section(doc, groups)
    _pareto_section(doc, groups)
    if seeded:
        _each_run_section(doc, rows, labels)
    _curves_section(doc, groups)
    scenarios = _scenarios_section(doc, groups)
    _conditioning_section(doc, rows, labels)
    _probe_section(doc, rows, labels)
    _red_team_section(doc, run_dirs, labels)
    _lm_eval_section(doc, rows, labels)
    _samples_section(doc, run_dirs, rows, labels, scenarios)

    text = doc.markdown()
    out.write_text(text, encoding="utf-8")
    out.with_suffix(".html").write_text(doc.html_page(), encoding="utf-8")
    return text
