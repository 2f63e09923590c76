"""Measure the decoding modes on the findings' runs: MLE and conditional training, three
seeds, each run evaluated again under every mode (`phf sweep --decoding`), then the
decoding report published to docs/findings/<task>/decoding/.

    python bench/decoding_findings.py                 # PEP8 then PII, seeds 42-44
    python bench/decoding_findings.py --tasks pii --wait

The runs are the findings sweep's (runs/findings/<task>, as bench/findings.py trains
them): a run already trained and evaluated there is not trained again, so this adds the
decoding modes to the published three-seed runs. Each mode is evaluated on the
unconditional scenario with `--samples` samples (default 500), which keeps a mode's
evaluation near a minute on 2 cores; `--wait` waits for a sweep still training in
another process to finish its seeds first.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import commit, cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SEEDS = "42,43,44"
#: task -> decoding modes. PEP8 gets the guidance-scale curve; MLE gets plain and rerank only
MODES = {
    "pep8": "plain,retag,guidance:0.5,guidance:1,guidance:2,guidance:4,guidance-untagged:0.5,guidance-untagged:1,"
            "guidance-untagged:2,guidance-untagged:4,tag-aware,rerank:4,rerank:4:model",
    "pii": "plain,retag,guidance:2,tag-aware,rerank:4",
}
CORPORA = {"pii": "debian-docs"}


def wait_for(out: Path, seeds: list[int]) -> None:
    """Until the MLE and conditional runs of every seed are evaluated."""
    from phf.sweep import seed_dir  # a sweep grown seed by seed keeps its first seed's runs flat

    def want():
        return [seed_dir(out, run, s, one_seed=False) / "results.json" for run in ("mle", "conditional") for s in seeds]

    while not all(p.exists() for p in want()):
        time.sleep(30)
    time.sleep(60)  # and its report stage, which follows the last evaluation


def measure(task: str, samples: int, wait: bool) -> dict:
    out = ROOT / "runs" / "findings" / task
    seeds = [int(s) for s in SEEDS.split(",")]
    if wait:
        wait_for(out, seeds)
    if task in CORPORA and not (ROOT / "runs" / "corpora" / f"{CORPORA[task]}.jsonl").exists():
        subprocess.run([sys.executable, "-m", "phf.data.prose_corpora", CORPORA[task],
                        f"runs/corpora/{CORPORA[task]}.jsonl", "--fetch"], cwd=ROOT, check=True)
    command = [sys.executable, "-m", "phf", "sweep", "--task", task, "--objectives", "mle,conditional",
               "--finetune", "none", "--seeds", SEEDS, "--out", str(out), "--decoding", MODES[task]]
    t0 = time.time()
    if wait:  # the training sweep runs elsewhere: only the decoding stage here
        from phf.decode_sweep import parse_decodings, run_decode_sweep
        from phf.sweep import _Timer

        run_decode_sweep(out, parse_decodings(MODES[task]), [f"eval.num_samples={samples}", "eval.scenarios=[]"],
                         timer=_Timer(out / "timings.json"))
    else:
        subprocess.run([*command, f"eval.num_samples={samples}", "eval.scenarios=[]"], cwd=ROOT, check=True)
    meta = {"command": " ".join(["phf", *command[3:]]) + f" (decoding stage: eval.num_samples={samples} "
            "eval.scenarios=[])", "seeds": seeds, "wall_seconds": round(time.time() - t0, 1), "commit": commit(),
            "cpu": cpu_name(), "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    dest = ROOT / "docs" / "findings" / task / "decoding"
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("decoding.md", "decoding.json", "decoding_guidance.png"):
        if (out / name).exists():
            shutil.copy(out / name, dest / name)
    timings = json.loads((out / "timings.json").read_text()) if (out / "timings.json").exists() else {}
    meta["stage_seconds"] = {k: v for k, v in timings.items() if k.startswith("decode/")}
    (dest / "runs.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="pep8,pii")
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--wait", action="store_true", help="wait for a sweep training in another process")
    args = ap.parse_args(argv)
    for task in args.tasks.split(","):
        print(json.dumps(measure(task, args.samples, args.wait), indent=2), flush=True)


if __name__ == "__main__":
    main()
