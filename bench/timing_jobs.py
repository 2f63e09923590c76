"""PEP8 (or PII) intervention timing on several cores: the runs of
`bench/intervention_timing.py` as one-seed, one-run sweeps, N at a time, each in its own
linked folder, moved into the findings layout as they finish. Then
`python bench/intervention_timing.py` finds every run evaluated and only writes the report.

    OMP_NUM_THREADS=1 python bench/timing_jobs.py --workers 2      # PEP8, seeds 42-44
    OMP_NUM_THREADS=1 python bench/timing_jobs.py --task pii

A sweep trains its runs one after the other on one process; on a 2-core machine two
one-thread processes finish the 15 PEP8 runs in about half the time. Every job's command,
wall time, commit and CPU go to runs/findings/<task>-timing/jobs.json (copied into
runs.json's invocations when published). A job whose run is already in place is skipped,
so the script continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from findings import share  # noqa: E402
from provenance import ROOT, commit, cores, cpu_name  # noqa: E402

OUT = ROOT / "runs" / "findings"
JOBS = OUT / "jobs"


def sweep(task: str, seed: int, out: Path, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "phf", "sweep", "--task", task, "--seeds", f"{seed},", "--out", str(out),
            "eval.scenarios=[]", *args]


def place(src: Path, dest: Path) -> None:
    """Move a one-seed sweep's flat run into the findings layout (`<name>` for the first
    seed that lands there, else `<name>/seed-N`, as seed_dir reads it)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(src), str(dest))


def jobs(task: str, seeds: list[int], starts: list[str]) -> list[dict]:
    main, timing = OUT / task, OUT / f"{task}-timing"
    todo = []
    for seed in seeds:
        mle_dest = main / "mle" if seed == seeds[0] else main / "mle" / f"seed-{seed}"
        todo.append({"name": f"mle/{seed}", "after": [], "seed": seed, "folder": None if seed == seeds[0] else
                     JOBS / f"mle-{seed}", "args": ["--objectives", "mle", "--finetune", "none"],
                     "moves": [] if seed == seeds[0] else [("mle", mle_dest)], "done": mle_dest / "results.json"})
    for seed in seeds:
        nest = "" if seed == seeds[0] else f"seed-{seed}"
        for s in starts:
            dest = timing / f"conditional@{s}" / nest
            todo.append({"name": f"conditional@{s}/{seed}", "after": [f"mle/{seed}"], "seed": seed,
                         "folder": JOBS / f"at{s}-{seed}", "args": ["--objectives", "conditional", "--finetune",
                                                                   "none", "--start-at", s],
                         "moves": [(f"conditional@{s}", dest)], "done": dest / "results.json"})
        pre, ft = timing / "mle-50pct" / nest, timing / "mle+conditional-finetune" / nest
        todo.append({"name": f"finetune/{seed}", "after": [f"mle/{seed}"], "seed": seed,
                     "folder": JOBS / f"finetune-{seed}", "args": ["--objectives", "mle", "--finetune", "conditional"],
                     "moves": [("mle-50pct", pre), ("mle+conditional-finetune", ft)], "done": ft / "results.json"})
    return todo


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="pep8", choices=("pep8", "pii"))
    p.add_argument("--seeds", default="42,43,44")
    p.add_argument("--start-at", default="0,0.2,0.6")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    task, seeds = args.task, [int(s) for s in args.seeds.split(",") if s]
    main_dir, timing = OUT / task, OUT / f"{task}-timing"
    log_path = timing / "jobs.json"
    timing.mkdir(parents=True, exist_ok=True)
    done_log = json.loads(log_path.read_text()) if log_path.exists() else []
    todo = jobs(task, seeds, args.start_at.split(","))
    finished = {j["name"] for j in todo if j["done"].exists()}
    failed: list[str] = []
    lock = threading.Lock()

    def ready(job) -> bool:
        if job["folder"] is not None and not (main_dir / "scored.jsonl.summary.json").exists():
            return False  # the first MLE job scores the corpus and trains the tokenizer
        return all(a in finished for a in job["after"])

    def worker() -> None:
        while True:
            with lock:
                pending = [j for j in todo if j["name"] not in finished and not j.get("taken")]
                if not pending or failed:
                    return
                job = next((j for j in pending if ready(j)), None)
                if job is not None:
                    job["taken"] = True
            if job is None:
                time.sleep(20)
                continue
            folder = job["folder"] or main_dir
            if job["folder"] is not None:
                share(main_dir, folder, extra=("mle",) if job["after"] else ())
            command = sweep(task, job["seed"], folder, job["args"])
            t0 = time.time()
            print(f"timing_jobs: start {job['name']}", flush=True)
            with open(JOBS.parent / f"{task}-timing" / f"job-{job['name'].replace('/', '-')}.log", "w") as log:
                rc = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
            with lock:
                if rc != 0:
                    failed.append(job["name"])
                    print(f"timing_jobs: {job['name']} failed (rc {rc}); see its log", flush=True)
                    return
                for name, dest in job["moves"]:
                    place(folder / name, dest)
                finished.add(job["name"])
                done_log.append({"job": job["name"], "command": " ".join(["phf", *command[3:]]),
                                 "wall_seconds": round(time.time() - t0, 1), "commit": commit(), "cpu": cpu_name(),
                                 "cores": cores(), "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())})
                log_path.write_text(json.dumps(done_log, indent=1))
                print(f"timing_jobs: done {job['name']} in {time.time() - t0:.0f} s", flush=True)

    threads = [threading.Thread(target=worker) for _ in range(args.workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        print("timing_jobs: failed:", ", ".join(failed), file=sys.stderr)
        return 1
    print(f"timing_jobs: all {len(todo)} runs in place; now `python bench/intervention_timing.py --task {task}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
