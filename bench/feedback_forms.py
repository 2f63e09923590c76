"""In what form the feedback enters (issue 24, item 6), on PEP8 or PII: MLE, conditional training
with the paper's two tokens, with 4 quantile tokens, with the score as text, with a 10%
cooldown without tokens (evaluated with and without the aligned prefix), token-level
masking and document filtering, at the findings' budget, grown one seed at a time.

    python bench/feedback_forms.py                    # PEP8, seeds 42, 43, 44
    python bench/feedback_forms.py --task pii         # PII (its offline corpus is built when missing)
    python bench/feedback_forms.py --seeds 42         # one seed (no interval across seeds)
    python bench/feedback_forms.py --publish-only     # publish the runs that exist

The runs are a `phf sweep` in runs/findings/<task> (the same folder as bench/findings.py's
runs of the task: MLE and conditional training are shared, not trained again), with the
unconditional scenario only. The runs with a cooldown phase or conditional training are
then evaluated again without the aligned prefix (`eval.aligned_prefix=false`, into
`<run>/noprefix/`): does the model stay aligned when nothing asks it to? Published to
docs/findings/<task>/feedback-forms/ (the sweep's report, runs.json, ratios.md, noprefix.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from findings import prepare_corpus, publish, run  # noqa: E402
from provenance import ROOT  # noqa: E402

OBJECTIVES = "mle,conditional,filtering,mask,conditional-cooldown,conditional-quantiles,conditional-score-text"
PLAN = "feedback-forms"
#: the runs evaluated again without the aligned prefix
NOPREFIX = ("conditional", "conditional-cooldown")
OUT = ROOT / "runs" / "findings"


def sweep_rows(sweep: Path, noprefix: tuple[str, ...] = ()) -> tuple[list[dict], dict[int, float]]:
    """A row per run and seed of the sweep (unconditional misalignment with the aligned
    prefix, held-out loss), and seed -> the MLE run's misalignment. The runs named in
    `noprefix` are also evaluated with `eval.aligned_prefix=false` (what is missing only,
    into `<run>/noprefix/`), each a row of its own."""
    from phf.config import load_config
    from phf.decode_sweep import _name_and_seed, sweep_runs
    from phf.evaluation.evaluate import evaluate_run
    from phf.runfiles import RunFiles, read_json

    rows, mle = [], {}
    for run_dir in sweep_runs(sweep):
        cfg = load_config([str(RunFiles(run_dir).config)])
        name, seed = _name_and_seed(run_dir, cfg)
        results = read_json(RunFiles(run_dir).results)
        misalignment = results["scenarios"]["unconditional"]["misalignment"]
        if name == "mle":
            mle[seed] = misalignment
        rows.append({"run": name, "seed": seed, "prefix": True, "misalignment": misalignment,
                     "heldout_loss": results.get("heldout_loss")})
        if name not in noprefix:
            continue
        target = run_dir / "noprefix"
        if not RunFiles(target).results.exists():
            e = cfg.eval.model_copy(update={"aligned_prefix": False, "kl_reference": None, "scenarios": []})
            evaluate_run(run_dir, e, cfg.task, out_dir=target, heldout=False)
        without = read_json(RunFiles(target).results)["scenarios"]["unconditional"]["misalignment"]
        rows.append({"run": name, "seed": seed, "prefix": False, "misalignment": without})
    return rows, mle


def _seeds_of(rows: list[dict], mle: dict[int, float], name: str, prefix: bool) -> list[dict]:
    """The rows of run `name` with or without the prefix, at the seeds that have an MLE run."""
    return [r for r in rows if r["run"] == name and r["prefix"] is prefix and r["seed"] in mle]


def _page(title: str, intro: str, columns: dict[str, str], body: list[str]) -> str:
    """A Markdown page: a title, a paragraph and one table (`columns`: header -> alignment)."""
    return "\n".join([f"# {title}", "", intro, "", f"| {' | '.join(columns)} |",
                      "|" + "".join("---:|" if a == "right" else "---|" for a in columns.values()), *body]) + "\n"


def noprefix_table(task: str, rows: list[dict], mle: dict[int, float]) -> str:
    from phf.decode_sweep import _cell, _ratio_cell  # the decoding tables' cells: mean ± 95% t; ratio, verdict

    body = [f"| {name} | {'with' if prefix else 'without'} | {len(mine)} | "
            f"{_cell([r['misalignment'] for r in mine], '.4f')} | {_ratio_cell(mine, mle)} |"
            for name in NOPREFIX for prefix in (True, False) if (mine := _seeds_of(rows, mle, name, prefix))]
    return _page(f"{task.upper()}: conditional training evaluated with and without the aligned prefix",
                 "Misalignment of 1000 unconditional samples, mean ± half-width of the 95% t interval over seeds; "
                 "x MLE: the mean over seeds of misalignment over the MLE run's of the same seed, with its "
                 "interval and the paired verdict.",
                 {"run": "left", "prefix": "left", "seeds": "right", "misalignment ↓": "right",
                  "x MLE (95%)": "left"}, body)


def ratio_table(task: str, rows: list[dict], mle: dict[int, float], what: str = "each form of the feedback") -> str:
    """Every run's misalignment over MLE's of the same seed (the README's table)."""
    from phf.decode_sweep import _cell, _ratio_cell

    body = [f"| {name} | {len(mine)} | {_ratio_cell(mine, mle)} | {_cell([r['heldout_loss'] for r in mine], '.3f')} |"
            for name in dict.fromkeys(r["run"] for r in rows) if name != "mle"
            if (mine := _seeds_of(rows, mle, name, True))]
    return _page(f"{task.upper()}: {what} against MLE",
                 "Misalignment of 1000 unconditional samples (with the aligned prefix) over the MLE run's of the "
                 "same seed: the mean over seeds with its 95% t interval and the paired verdict; held-out loss: "
                 "mean ± half-width of the 95% t interval over seeds.",
                 {"run": "left", "seeds": "right", "x MLE (95%)": "left", "held-out loss ↓": "right"}, body)


def publish_noprefix(task: str) -> str:
    rows, mle = sweep_rows(OUT / task, NOPREFIX)
    text = noprefix_table(task, rows, mle)
    dest = ROOT / "docs" / "findings" / task / PLAN
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "noprefix.md").write_text(text)
    (dest / "ratios.md").write_text(ratio_table(task, rows, mle))
    (dest / "noprefix.json").write_text(json.dumps(rows, indent=1) + "\n")
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="pep8", choices=("pep8", "pii"))
    p.add_argument("--seeds", default="42,43,44")
    p.add_argument("--publish-only", action="store_true", help="no training: evaluate without the prefix "
                   "what is missing and publish")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    if not args.publish_only:
        prepare_corpus(args.task)
        for k in range(1, len(seeds) + 1):
            meta = run(args.task, seeds[:k], OUT, ["eval.scenarios=[]"], OBJECTIVES, "none")
            publish(args.task, OUT, meta, PLAN)
            print(publish_noprefix(args.task), flush=True)
    else:
        print(publish_noprefix(args.task), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
