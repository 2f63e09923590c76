"""Documents per second of a model scorer on Ray actors with GPUs (NOT RUN: written on a
machine without a GPU; run it on one and add its numbers to bench/RESULTS.md).

The scorer is toxicity's `hf` backend (any local sequence-classification checkpoint:
`--model DIR`, e.g. a saved `unitary/toxic-bert` or Detoxify's `original` weights
converted with save_pretrained) or its `detoxify` backend (`--detoxify-ckpt FILE`).
The corpus is `--docs` synthetic prose documents of `--sentences` sentences each
(written as JSONL shards of `--shard-docs` documents), so that the run needs no data
on disk. For each batch size and each number of actors per GPU, the whole corpus is
scored with `score_corpus_ray` inside one running Ray instance (`--address`, or a local
instance over the machine's GPUs), after a warm-up run (file caches, CUDA kernels);
reported: documents and sentences per second. Each run starts its own actor pool, so
the timed run includes starting the actors and loading the model on each (seconds);
a large `--docs` amortises it.

    python bench/ray_gpu_scoring.py --model /models/toxic-bert --batch-sizes 32,128,512 \
        --actors-per-gpu 1,2 [--address auto] [--docs 20000]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

WORDS = ("the river model data calm review sentence code night morning train city water paper idea "
         "people table window green quickly slowly never always stupid awful nice kind").split()


def write_corpus(root: Path, docs: int, sentences: int, shard_docs: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for start in range(0, docs, shard_docs):
        with open(root / f"part-{start // shard_docs:05d}.jsonl", "w") as f:
            for _ in range(min(shard_docs, docs - start)):
                text = " ".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 20))).capitalize() + "."
                                for _ in range(sentences))
                f.write(json.dumps({"text": text}) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--model", help="a local sequence-classification model directory (hf backend)")
    g.add_argument("--detoxify-ckpt", help="a Detoxify .ckpt file (detoxify backend)")
    p.add_argument("--address", help="a running Ray cluster; default: a local instance")
    p.add_argument("--docs", type=int, default=20_000)
    p.add_argument("--sentences", type=int, default=8)
    p.add_argument("--shard-docs", type=int, default=1_000)
    p.add_argument("--batch-sizes", default="32,128,512")
    p.add_argument("--actors-per-gpu", default="1,2")
    args = p.parse_args(argv)

    import ray

    from phf.data.config import DataConfig
    from phf.engines.ray_scoring import score_corpus_ray

    work = Path(tempfile.mkdtemp(prefix="ray-gpu-bench-"))
    write_corpus(work / "in", args.docs, args.sentences, args.shard_docs)
    data = DataConfig(source="jsonl", path=str(work / "in"))
    backend = {"backend": "hf", "model": args.model} if args.model else \
        {"backend": "detoxify", "checkpoint": args.detoxify_ckpt}
    ray.init(address=args.address or "local", include_dashboard=False, log_to_driver=False)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if not gpus:
        raise SystemExit("no GPU in the Ray cluster: this benchmark measures GPU actors")
    rows = []
    try:
        for per_gpu in (int(x) for x in args.actors_per_gpu.split(",")):
            for batch in (int(x) for x in args.batch_sizes.split(",")):
                scorer_args = {**backend, "batch_size": batch, "device": "cuda"}
                run = dict(actors=gpus * per_gpu, gpus_per_actor=1 / per_gpu)
                score_corpus_ray(data, work / "warm", "toxicity", scorer_args, resume=False, **run)
                t = time.perf_counter()
                r = score_corpus_ray(data, work / "out", "toxicity", scorer_args, resume=False, **run)
                dt = time.perf_counter() - t
                rows.append({"gpus": gpus, "actors_per_gpu": per_gpu, "batch_size": batch, "seconds": dt,
                             "docs_per_s": r.summary.documents / dt, "sentences_per_s": r.summary.segments / dt})
                print(rows[-1], flush=True)
    finally:
        ray.shutdown()
    common.write_result("ray_gpu_scoring", {"backend": backend, "docs": args.docs, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
