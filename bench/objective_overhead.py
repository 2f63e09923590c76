"""Objective overhead: tokens/s of filtering, conditional, UL, RWR and AWR vs MLE.

All through phf's PHFTrainer on the tiny preset, same batch and steps. Filtering and
conditional train with MLE on their own packed data (conditional with the two control
tokens added to the vocabulary); UL, RWR and AWR use the PEP8 task's reference
settings (UL alpha 0.01, threshold 0; RWR beta 10; AWR alpha 0.05, beta 1, value head).
Each repeat runs MLE and then every objective (rotating order); each ratio is taken
against the MLE run of the same repeat, and reported as the median over repeats.

    .venv/bin/python bench/objective_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import trainloop  # noqa: E402

OBJECTIVES = ("filtering", "conditional", "unlikelihood", "rwr", "awr")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    args = ap.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 4)
    steps = args.steps or (3 if args.quick else 8)
    batch_size = 16
    data = {name: common.packed(name, "tiny") for name in ("mle", *OBJECTIVES)}
    tps = {name: [] for name in ("mle", *OBJECTIVES)}
    ratios = {name: [] for name in OBJECTIVES}
    retries = 0
    for r in range(repeats):
        # MLE takes its turn in the rotation too: a run late in a repeat is often slower
        names = ["mle", *OBJECTIVES]
        order = names[r % len(names):] + names[:r % len(names)]

        def one_repeat():
            return {name: trainloop.timed_run("phf", *data[name], "tiny", batch_size=batch_size, steps=steps,
                                              objective=name)["tokens_per_s"] for name in order}

        this, n = common.clean_repeat(one_repeat)
        retries += n
        for name in this:
            tps[name].append(this[name])
        for name in OBJECTIVES:
            ratios[name].append(this[name] / this["mle"])
        print(f"repeat {r}: " + ", ".join(f"{k} {v:.0f}" for k, v in this.items()) + " tok/s", flush=True)
    result = {
        "preset": "tiny", "batch_size": batch_size, "steps_per_run": steps,
        "tokens_per_s": {k: common.summary(v) for k, v in tps.items()},
        "ratio_vs_mle": {k: common.summary(v) for k, v in ratios.items()},
        "target": ">= 0.95x MLE", "repeats_redone_after_a_stop": retries,
        "met": all(common.median(v) >= 0.95 for v in ratios.values()),
    }
    common.write_result("objective_overhead", result)
    return result


if __name__ == "__main__":
    main()
