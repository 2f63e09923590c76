"""When the feedback enters (issue 24, item 6), on PEP8 or PII: conditional training from 0%,
20% or 60% of one run (MLE before it, one optimizer and learning-rate schedule) and MLE
to 50% followed by conditional finetuning, next to MLE, at the findings' budget and seeds.

    python bench/intervention_timing.py                 # PEP8, seeds 42, 43, 44; continues where it stopped
    python bench/intervention_timing.py --task pii      # PII
    python bench/intervention_timing.py --task pii --publish-only   # ratios.md from the runs that exist
    python bench/intervention_timing.py --seeds 42      # one seed (no interval across seeds)

A `phf sweep --start-at 0,0.2,0.6` in runs/findings/<task>-timing that shares the task's
findings sweep's scored corpus, tokenizer and MLE runs (linked, not trained again), with
the unconditional scenario only. Published to docs/findings/<task>/intervention-timing/
(the sweep's report, runs.json, and ratios.md: each run's misalignment over MLE's of
the same seed, as bench/feedback_forms.py writes it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from feedback_forms import ratio_table, sweep_rows  # noqa: E402
from findings import publish, run, share  # noqa: E402
from provenance import ROOT  # noqa: E402

PLAN = "intervention-timing"
OUT = ROOT / "runs" / "findings"


def publish_ratios(task: str, folder: str) -> str:
    rows, mle = sweep_rows(OUT / folder)
    text = ratio_table(task, rows, mle, "each start point of the feedback")
    (ROOT / "docs" / "findings" / task / PLAN / "ratios.md").write_text(text)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="pep8", choices=("pep8", "pii"))
    p.add_argument("--seeds", default="42,43,44")
    p.add_argument("--start-at", default="0,0.2,0.6")
    p.add_argument("--publish-only", action="store_true", help="no training: write ratios.md from the runs that exist")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    task, folder = args.task, f"{args.task}-timing"
    if args.publish_only:
        print(publish_ratios(task, folder), flush=True)
        return 0
    share(OUT / task, OUT / folder, extra=("mle",))  # MLE's runs of every seed are the findings sweep's
    for k in range(1, len(seeds) + 1):  # seed by seed, published as each finishes
        meta = run(task, seeds[:k], OUT, ["eval.scenarios=[]", "--start-at", args.start_at], "conditional",
                   "conditional", folder=folder)
        publish(task, OUT, meta, PLAN, folder=folder)
        print(publish_ratios(task, folder), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
