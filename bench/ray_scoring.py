"""The Ray scoring engine against the local engine, on this machine.

Both engines score the same folder of standard-library modules with the pep8 scorer
(pycodestyle), in the same process:

* fixed overhead: the local engine (process pool, 2 workers) against the Ray engine
  as `phf score --engine ray` runs it without --address (a local Ray instance started
  and stopped by the run, 2 CPUs), interleaved, `--repeats` times; the ratio is per
  repeat (Ray time / local time), median;
* throughput from 1 to 2 workers: the Ray engine inside a running Ray instance of 1,
  then 2 CPUs (start-up excluded: each is timed on its second run, after a first run
  that starts the worker processes), in documents and MB per second.

    .venv/bin/python bench/ray_scoring.py [--mb 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def corpus(mb: float) -> Path:
    """The first `mb` MB of stdlib modules (sorted paths), copied to a folder (cached)."""
    from phf.data.config import DataConfig
    from phf.data.sources import iter_documents

    root = common.FIXTURES / f"ray-corpus-{mb:g}MB"
    if not root.exists():
        tmp = root.with_name(root.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for i, doc in enumerate(iter_documents(DataConfig(source="stdlib", max_bytes=int(mb * 1e6)))):
            (tmp / f"{i:05d}_{Path(doc['meta']['path']).name}").write_text(doc["text"], encoding="utf-8")
        tmp.rename(root)
    return root


def cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?")


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--mb", type=float, default=2.0)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--shard-kb", type=int, default=128)
    args = p.parse_args(argv)

    import ray

    from phf.data.config import DataConfig
    from phf.data.scoring import score_corpus
    from phf.data.sources import iter_documents
    from phf.engines.ray_scoring import score_corpus_ray

    root = corpus(args.mb)
    data = DataConfig(source="dir", path=str(root))
    mb = sum(f.stat().st_size for f in root.iterdir()) / 1e6
    work = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    shard_bytes = args.shard_kb * 1024

    def local(workers: int) -> tuple[float, int]:
        t = time.perf_counter()
        s = score_corpus(iter_documents(data), str(work / "local.jsonl"), "pep8", num_workers=workers, resume=False)
        return time.perf_counter() - t, s.documents_in

    def on_ray(workers: int | None) -> tuple[float, int]:
        t = time.perf_counter()
        r = score_corpus_ray(data, work / "ray", "pep8", num_cpus=workers, shard_bytes=shard_bytes, resume=False)
        return time.perf_counter() - t, r.summary.documents_in

    overhead = {"local_s": [], "ray_s": [], "ratio": []}
    docs = None
    for _ in range(args.repeats):
        tl, docs = local(2)
        tr, docs_ray = on_ray(2)  # starts and stops its own Ray instance, as the CLI does
        assert docs_ray == docs
        overhead["local_s"].append(tl)
        overhead["ray_s"].append(tr)
        overhead["ratio"].append(tr / tl)

    scaling = {}
    for workers in (1, 2):
        ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False)
        try:
            on_ray(None)  # starts the worker processes
            t, _ = on_ray(None)
        finally:
            ray.shutdown()
        scaling[workers] = {"seconds": t, "docs_per_s": docs / t, "MB_per_s": mb / t}
    shutil.rmtree(work, ignore_errors=True)
    result = {
        "cpu_model": cpu_model(),
        "corpus": {"MB": round(mb, 2), "documents": docs, "shards": None, "shard_kb": args.shard_kb},
        "fixed_overhead": {"local_engine_2_workers_s": common.summary(overhead["local_s"]),
                           "ray_engine_2_cpus_with_startup_s": common.summary(overhead["ray_s"]),
                           "ratio_ray_over_local": common.summary(overhead["ratio"])},
        "ray_scaling": scaling,
        "speedup_2_over_1": scaling[1]["seconds"] / scaling[2]["seconds"],
    }
    from phf.engines.shards import plan_input_shards

    result["corpus"]["shards"] = len(plan_input_shards(data, shard_bytes))
    common.write_result("ray_scoring", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
