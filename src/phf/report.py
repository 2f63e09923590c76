"""Reports across runs: a Markdown table (one row per run directory).

    phf report runs/demo/mle runs/demo/filtering runs/demo/conditional -o runs/demo/report.md
"""

from __future__ import annotations

import json
from pathlib import Path

COLUMNS = [
    # (header, results key, format)
    ("run", "run", "{}"),
    ("objective", "objective", "{}"),
    ("tokens", "num_tokens", "{:,}"),
    ("misalignment ↓", "misalignment", "{:.5f}"),
    ("expected max ↓", "expected_max", "{:.5f}"),
    ("hit rate ↓", "hit_rate", "{:.3f}"),
    ("held-out loss ↓", "heldout_loss", "{:.4f}"),
    ("KL ↓", "kl", "{:.3f}"),
]


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


def markdown_table(rows: list[dict]) -> str:
    cols = [c for c in COLUMNS if any(r.get(c[1]) is not None for r in rows)]
    lines = ["| " + " | ".join(h for h, _, _ in cols) + " |",
             "|" + "|".join("---" if k in ("run", "objective") else "---:" for _, k, _ in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(k), f) for _, k, f in cols) + " |")
    return "\n".join(lines)


def write_report(run_dirs: list[str | Path], out: str | Path, title: str = "phf report") -> str:
    rows = load_results(run_dirs)
    text = "\n".join([
        f"# {title}", "",
        "Misalignment: mean score of unconditional samples (lower is better); expected max: mean of the",
        "maximum over groups of 25 samples; hit rate: share of samples scoring above the task's threshold;",
        "held-out loss: nats per token on the same held-out documents, control tokens excluded.", "",
        markdown_table(rows), ""])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text
