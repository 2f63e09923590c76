"""When the feedback enters (issue 24, item 6), on PEP8 or PII: conditional training from 0%,
20% or 60% of one run (MLE before it, one optimizer and learning-rate schedule) and MLE
to 50% followed by conditional finetuning, next to MLE, at the findings' budget and seeds.

    python bench/intervention_timing.py                 # PEP8, seeds 42, 43, 44; continues where it stopped
    python bench/intervention_timing.py --task pii      # PII
    python bench/intervention_timing.py --seeds 42      # one seed (no interval across seeds)

A `phf sweep --start-at 0,0.2,0.6` in runs/findings/<task>-timing that shares the task's
findings sweep's scored corpus, tokenizer and MLE runs (linked, not trained again), with
the unconditional scenario only. Published to docs/findings/<task>/intervention-timing/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from findings import publish, run, share  # noqa: E402
from provenance import ROOT  # noqa: E402

PLAN = "intervention-timing"
OUT = ROOT / "runs" / "findings"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="pep8", choices=("pep8", "pii"))
    p.add_argument("--seeds", default="42,43,44")
    p.add_argument("--start-at", default="0,0.2,0.6")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    task, folder = args.task, f"{args.task}-timing"
    share(OUT / task, OUT / folder, extra=("mle",))  # MLE's runs of every seed are the findings sweep's
    for k in range(1, len(seeds) + 1):  # seed by seed, published as each finishes
        meta = run(task, seeds[:k], OUT, ["eval.scenarios=[]", "--start-at", args.start_at], "conditional",
                   "conditional", folder=folder)
        publish(task, OUT, meta, PLAN, folder=folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
