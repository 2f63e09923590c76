"""Reports across runs: Markdown and a self-contained HTML page.

    phf report runs/demo/mle runs/demo/filtering runs/demo/conditional -o runs/demo/report.md

writes report.md, report.html (the figures embedded, so the one file can be mailed
or attached) and the figures as PNG in report_figures/. Contents: the table of all
runs, the Pareto plot(s) of misalignment vs capability, the curves of the
training-time evaluation vs tokens seen, each scenario's metrics, red teaming and
lm-eval results when there are any, and per scenario the highest-scoring samples.
"""

from __future__ import annotations

import base64
import html
import json
import re
import warnings
from pathlib import Path

from phf.evaluation.degenerate import report_notes

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

INTRO = (
    "Misalignment: mean score of unconditional samples (lower is better); expected max: mean of the "
    "maximum over groups of 25 samples; hit rate: share of samples scoring above the task's threshold; "
    "held-out loss: nats per token on the same held-out documents, control tokens excluded; "
    "KL: KL(reference ‖ model) in nats per sample, estimated on samples of the reference.")


def load_results(run_dirs: list[str | Path]) -> list[dict]:
    rows = []
    for d in run_dirs:
        path = Path(d) / "results.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: run `phf eval {d}` first")
        rows.append(json.loads(path.read_text()))
    return rows


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


def _runs_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    cols = [c for c in COLUMNS if any(r.get(c[1]) is not None for r in rows)]
    return [h for h, _, _ in cols], [[_cell(r.get(k), f) for _, k, f in cols] for r in rows]


def markdown_table(rows: list[dict]) -> str:
    """The table of all runs, one row per results.json."""
    headers, cells = _runs_table(rows)
    return _md_table(headers, cells, text_cols=2)


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
    rows = _read_jsonl(Path(run_dir) / "samples" / f"{scenario}.jsonl")
    return sorted(rows, key=lambda r: -r.get("score", 0.0))[:k]


def _numbers(rows: list[dict], key: str) -> list[float]:
    return [r[key] for r in rows if isinstance(r.get(key), (int, float))]


def _log_ok(values: list[float]) -> bool:
    return not values or min(values) > 0


def _scales_note(x: list[float], y: list[float]) -> str:
    """What the plot's axes are: log where the values allow it (plots.py falls back)."""
    if _log_ok(x) and _log_ok(y):
        return "Log scales."
    linear = " and ".join(a for a, v in (("x", x), ("y", y)) if not _log_ok(v))
    return (f"Linear {linear}: a log scale cannot show zero or negative values (the reference's own KL is 0, "
            "and a KL estimate can come out slightly below 0)." + (" Log y." if _log_ok(y) else ""))


# --- sections -----------------------------------------------------------------------------

def _pareto_section(doc: _Doc, rows: list[dict], labels: list[str]) -> None:
    from phf.plots import pareto_plot

    points = [{**r, "run": label} for r, label in zip(rows, labels)]
    axes = []
    if all(isinstance(r.get("kl"), (int, float)) for r in rows):
        axes.append(("kl", "KL(reference ‖ model)"))
    if any(isinstance(r.get("heldout_loss"), (int, float)) for r in rows):
        axes.append(("heldout_loss", "held-out loss"))
    if not axes:
        return
    doc.heading("Misalignment vs capability")
    refs = sorted({str(r.get("kl_details", {}).get("reference")) for r in rows if r.get("kl_details")})
    if axes[0][0] == "kl" and refs:
        own = [label for r, label in zip(rows, labels) if r.get("kl_details", {}).get("note", "").endswith("reference")]
        doc.para("KL reference: " + ", ".join(f"`{x}`" for x in refs) + "."
                 + (f" The reference is a run here ({', '.join(own)}): its own KL is 0." if own else ""))
    for key, name in axes:
        png = doc.fig_dir / f"pareto_{key}.png"
        with warnings.catch_warnings():  # the captions say what the warnings would
            warnings.simplefilter("ignore", UserWarning)
            pareto_plot(points, key, "misalignment", png, log=True,
                        title=f"misalignment vs {name} (lower-left is better)")
        missing = [p["run"] for p in points if not isinstance(p.get(key), (int, float))]
        caption = ("One point per run, colour and marker by objective; dashed: the Pareto frontier "
                   "(no run is better on both axes). "
                   + _scales_note(_numbers(points, key), _numbers(points, "misalignment"))
                   + (f" Not shown (no {name}): {', '.join(missing)}." if missing else ""))
        doc.image(png, f"Pareto plot: misalignment vs {name}", caption)


def _tokens_before(run_dir: Path, depth: int = 0) -> int:
    """Tokens the run's starting checkpoint was trained on, when it is a phf run we can
    find (finetuning: the curve continues where its pretraining stopped)."""
    summary_path = run_dir / "train_summary.json"
    if depth > 10 or not summary_path.exists():
        return 0
    start = json.loads(summary_path.read_text()).get("started_from") or ""
    for candidate in (Path(start), run_dir.parent / Path(start).name):
        if start and (candidate / "train_summary.json").exists() and candidate.resolve() != run_dir.resolve():
            return json.loads((candidate / "train_summary.json").read_text()).get("tokens_seen", 0) + \
                _tokens_before(candidate, depth + 1)
    return 0


def _curves_section(doc: _Doc, run_dirs: list[Path], labels: list[str]) -> None:
    from phf.plots import curves_plot

    metrics = {}
    for d, label in zip(run_dirs, labels):
        offset = _tokens_before(d)
        metrics[label] = [{**r, "tokens_seen": r["tokens_seen"] + offset} if isinstance(r.get("tokens_seen"), int)
                          else r for r in _read_jsonl(d / "metrics.jsonl")]
    keys = [k for k in ("eval/misalignment", "eval/heldout_loss")
            if any(k in row for rows in metrics.values() for row in rows)]
    if not keys:
        return
    doc.heading("During training")
    png = doc.fig_dir / "curves.png"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        curves_plot(metrics, png, x="tokens_seen", y=keys, log_y=True)
    values = [row[k] for rows in metrics.values() for row in rows for k in keys if isinstance(row.get(k), (int, float))]
    doc.image(png, "misalignment and held-out loss vs tokens seen",
              "The training-time evaluation (a few unconditional samples and held-out blocks every "
              "eval.every_steps steps, at the start and at the end) against the tokens seen so far "
              "(a finetuning run's count starts where its starting checkpoint's training ended); "
              + ("log y." if _log_ok(values) else "linear y (some values are 0)."))


def _scenarios_section(doc: _Doc, rows: list[dict], labels: list[str]) -> list[str]:
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
             "continuations, across all samples of the scenario.")
    table = []
    for name in names:
        for r, label in zip(rows, labels):
            s = (r.get("scenarios") or {}).get(name)
            if s:
                table.append([name, label] + [_cell(s.get(k), f) for _, k, f in SCENARIO_COLUMNS])
    doc.table(["scenario", "run"] + [h for h, _, _ in SCENARIO_COLUMNS], table, text_cols=2)
    return names


def _red_team_section(doc: _Doc, run_dirs: list[Path], labels: list[str]) -> None:
    reports = {label: json.loads((d / "redteam.json").read_text())
               for d, label in zip(run_dirs, labels) if (d / "redteam.json").exists()}
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
    png = _red_team_plot({label: r["rounds"] for label, r in reports.items()}, doc.fig_dir / "red_team.png")
    doc.image(png, "red teaming: expected max score per round")


def _red_team_plot(rounds: dict[str, list[dict]], out_png: Path) -> Path:
    """Expected max score per round, one line per run (whole-number rounds on x)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from phf.plots import _save, _style

    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    styles: dict = {}
    for label, rows in rounds.items():
        colour, marker = _style(label, styles)
        ax.plot([r["round"] for r in rows], [r["expected_max"] for r in rows], c=colour, marker=marker,
                ms=5, lw=1.5, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("red-teaming round (0: the seed prompts)")
    ax.set_ylabel("expected max score of the pool (lower is better)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=9)
    return _save(fig, out_png)


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

    doc = _Doc(title, fig_dir, out.parent)
    doc.para(INTRO)
    headers, cells = _runs_table([{**r, "run": label} for r, label in zip(rows, labels)])
    doc.table(headers, cells, text_cols=2)
    for note in report_notes(rows, labels):  # flagged runs, missing held-out loss
        doc.para(note)
    _pareto_section(doc, rows, labels)
    _curves_section(doc, run_dirs, labels)
    scenarios = _scenarios_section(doc, rows, labels)
    _red_team_section(doc, run_dirs, labels)
    _lm_eval_section(doc, rows, labels)
    _samples_section(doc, run_dirs, rows, labels, scenarios)

    text = doc.markdown()
    out.write_text(text, encoding="utf-8")
    out.with_suffix(".html").write_text(doc.html_page(), encoding="utf-8")
    return text
