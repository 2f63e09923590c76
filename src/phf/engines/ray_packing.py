"""Packing scored shards on a Ray cluster: `phf pack`.

Each scored shard (a parquet or JSONL file of scored records, e.g. the shards that
`phf score --engine ray` writes) is packed by one Ray task with
`phf.data.packing.pack`, the local packer, into a folder of its own:

    tokenizer/            the tokenizer the ids come from (control tokens included)
    pack-00000/           train.ids, train.scores, heldout.ids, heldout.scores, pack.json
    pack-00001/ ...
    state.json            the spec and the scored shards, in order

Shard k is packed with the run's PackSpec and seed `spec.seed + k`, so each shard
draws its own held-out documents and dropped control tokens; its folder holds exactly
what `pack(read_scored(shard_k), tokenizer, spec with that seed, folder)` writes on one
machine. A shard's folder is written under a temporary name and renamed when packed,
so a rerun skips finished shards and repacks the rest; Ray reruns a task whose worker
died. Training reads the folders as one dataset (`data.packed_path`,
`phf.data.packed_shards.ShardedPackedDataset`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

from phf.data.packing import PackSpec, pack
from phf.errors import DataError
from phf.records import read_scored
from phf.tokenizer import load_tokenizer, save_tokenizer, tokenizer_fingerprint
from phf.engines.ray_cluster import ray_session

log = logging.getLogger(__name__)

MAX_RETRIES = 3


def shard_folder(out_dir: Path, index: int) -> Path:
    return out_dir / f"pack-{index:05d}"


def pack_shard(shard: str, tokenizer_dir: str, spec: dict, folder: str) -> dict:
    """Pack one scored shard into `folder` (via a temporary folder, renamed at the end)."""
    tokenizer = load_tokenizer(tokenizer_dir)
    if spec["tokenizer"] and tokenizer_fingerprint(tokenizer) != spec["tokenizer"]:
        raise ValueError(f"{tokenizer_dir}: not the tokenizer this pack was planned with")
    final = Path(folder)
    tmp = final.with_name(f".{final.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)  # a killed attempt's
    stats = pack(read_scored(shard), tokenizer, PackSpec(**spec), tmp, threads=1)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return {"shard": shard, "folder": str(final), **asdict(stats)}


def _finished(folder: Path, spec: dict) -> bool:
    try:
        return json.loads((folder / "pack.json").read_text())["spec"] == spec
    except (OSError, ValueError, KeyError):
        return False


def pack_shards_ray(shards: Sequence[str | Path], tokenizer, spec, out_dir: str | Path, *,
                    address: str | None = None, num_cpus: int | None = None, resume: bool = True) -> dict:
    """Pack every scored shard into its own folder under `out_dir` on Ray.

    `tokenizer` is the run's tokenizer (control tokens already added for conditional
    training); `spec` the run's PackSpec. Returns {"folders", "packed", "skipped",
    "documents", "tokens", "blocks", "filtered_documents"} summed over the shards.
    """
    out = Path(out_dir)
    shards = [str(s) for s in shards]
    spec = replace(spec, tokenizer=spec.tokenizer or tokenizer_fingerprint(tokenizer))
    state = {"spec": asdict(spec), "shards": shards}
    state_path = out / "state.json"
    if out.exists() and any(out.iterdir()):
        if not state_path.exists():
            raise DataError(f"{out} exists but state.json does not, so phf cannot tell what wrote it; remove it "
                            "or choose another output folder")
        old = json.loads(state_path.read_text())
        if old != json.loads(json.dumps(state)):
            if resume:
                k = next(k for k in state if old.get(k) != json.loads(json.dumps(state[k])))
                raise DataError(f"{out} was packed with other {k} (another config, tokenizer or input); remove "
                                "it (or pass --restart) to pack again, or choose another output folder")
        if not resume:
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    tok_dir = out / "tokenizer"
    save_tokenizer(tokenizer, tok_dir)
    state_path.write_text(json.dumps(state, indent=2))

    specs = [asdict(replace(spec, seed=spec.seed + i)) for i in range(len(shards))]
    todo = [i for i in range(len(shards)) if not (resume and _finished(shard_folder(out, i), specs[i]))]
    log.info("%d scored shards: %d packed already, %d to pack", len(shards), len(shards) - len(todo), len(todo))
    if todo:
        with ray_session(address, num_cpus) as ray:
            task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(pack_shard)
            refs = [task.remote(shards[i], str(tok_dir), specs[i], str(shard_folder(out, i))) for i in todo]
            try:
                ray.get(refs)
            except ray.exceptions.RayTaskError as e:
                if isinstance(e.cause, ValueError):  # a bad record (DataError), a wrong tokenizer
                    raise e.cause from None
                raise
    totals = {"folders": len(shards), "packed": len(todo), "skipped": len(shards) - len(todo),
              "documents": {}, "tokens": {}, "blocks": {}, "filtered_documents": 0}
    for i in range(len(shards)):
        stats = json.loads((shard_folder(out, i) / "pack.json").read_text())["stats"]
        totals["filtered_documents"] += stats["filtered_documents"]
        for k in ("documents", "tokens", "blocks"):
            for split, n in stats[k].items():
                totals[k][split] = totals[k].get(split, 0) + n
    return totals
