"""`make demo` wall time on this machine, and the time of each stage.

Runs the PEP8 demo from scratch (`phf demo --task pep8`, what `make demo` runs) into
bench/out/demo and reads its stage timings (`timings.json`: scoring, tokenizer, each
run's training and evaluation, report). It takes as long as the demo (the target is
<= 20 minutes on 2 cores), so `run_all.py` runs it only with `--demo`; otherwise
RESULTS.md shows the last recorded run of this script, with its date.

    .venv/bin/python bench/demo_time.py [--keep]
    .venv/bin/python bench/demo_time.py --record runs/demo   # a finished `make demo`: its stage timings
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", action="store_true", help="continue an existing bench/out/demo (not timed from scratch)")
    ap.add_argument("--task", default="pep8")
    ap.add_argument("--record", metavar="DIR", help="record the stage timings of a demo already run into DIR "
                    "(wall time = their sum) instead of running it")
    args = ap.parse_args(argv)
    if args.record:
        stages = json.loads((Path(args.record) / "timings.json").read_text())
        wall = sum(stages.values())
        result = {"task": args.task, "returncode": 0, "wall_s": round(wall, 1), "wall_min": round(wall / 60, 2),
                  "stages_s": stages, "stages_sum_s": round(wall, 1), "recorded_from": args.record,
                  "target": "<= 20 min on 2 cores", "met": wall <= 20 * 60}
        common.write_result("demo", result)
        return result
    out = common.OUT / "demo"
    if out.exists() and not args.keep:
        shutil.rmtree(out)
    phf = Path(sys.executable).with_name("phf")
    cmd = [str(phf) if phf.exists() else sys.executable, *([] if phf.exists() else ["-m", "phf.cli"]),
           "demo", "--task", args.task, "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.time()
    with open(common.OUT / "demo.log", "w") as log:
        proc = subprocess.run(cmd, cwd=common.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.time() - t0
    timings_path = out / "timings.json"
    stages = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    result = {"task": args.task, "returncode": proc.returncode, "wall_s": round(wall, 1),
              "wall_min": round(wall / 60, 2), "stages_s": stages,
              "stages_sum_s": round(sum(stages.values()), 1), "target": "<= 20 min on 2 cores",
              "met": proc.returncode == 0 and wall <= 20 * 60, "log": str(common.OUT / "demo.log")}
    common.write_result("demo", result)
    return result


if __name__ == "__main__":
    main()
