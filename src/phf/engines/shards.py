"""Shards: how a corpus is cut into units of work that are scored (or packed) whole.

A shard is the unit that a Ray task reads, scores and commits atomically, and the unit
that a rerun skips once committed. Shards are planned in the driver without reading
any text (file listings, file sizes, dataset lengths), so the plan is the same on
every run of the same command:

* ``stdlib`` / ``dir``: the source's files in sorted order, grouped into shards of
  about `shard_bytes` (by file size on disk);
* ``jsonl``: one shard per file (`data.path` may be a file, a glob, a folder or a list);
* ``hf``: parquet files (a file, a glob, a folder or a list) are one shard each;
  anything else is a `datasets` dataset (a save_to_disk folder or a hub name), cut
  into row ranges of `shard_rows`.

Each shard yields exactly the documents, with exactly the `meta`, that the local
engine's source (`phf.data.sources`) yields for the same records: the readers below
are that module's own readers, applied to a part of the corpus.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from phf.data.config import DataConfig
from phf.errors import DataError
from phf.inputs import SourceStats, is_saved_dataset, iter_hf_dataset, list_files
from phf.data.sources import _files, _read_files, _read_hf, _read_jsonl, stdlib_dir

#: default shard size of file sources (bytes on disk) and of datasets (rows)
SHARD_BYTES = 16 << 20
SHARD_ROWS = 10_000


@dataclass(frozen=True)
class InputShard:
    """One shard of raw documents. `kind` is files | jsonl | parquet | dataset."""

    name: str
    kind: str
    paths: tuple[str, ...] = ()
    dataset: str = ""
    split: str = "train"
    start: int = 0
    stop: int = 0


def plan_input_shards(cfg: DataConfig, shard_bytes: int = SHARD_BYTES, shard_rows: int = SHARD_ROWS) -> list[InputShard]:
    """The shards of the configured corpus (see the module docstring)."""
    if cfg.max_documents is not None or cfg.max_bytes is not None:
        raise DataError("data.max_documents and data.max_bytes cap the corpus in stream order, which a sharded "
                        "run does not have; with --engine ray give the files to score instead (a glob, a folder "
                        "or a list)")
    if cfg.source in ("stdlib", "dir"):
        if cfg.source == "stdlib":
            files = _files(stdlib_dir(), "*.py", ("site-packages", "dist-packages"))
        else:
            files = _files(Path(cfg.path), cfg.glob)
        return _group_files(files, shard_bytes)
    if cfg.source == "jsonl":
        return [InputShard(f"{i:05d}", "jsonl", (str(f),)) for i, f in
                enumerate(list_files(_paths(cfg.path), (".jsonl", ".json")))]
    if cfg.source == "hf":
        paths = _paths(cfg.path)
        if _parquet_input(paths):
            return [InputShard(f"{i:05d}", "parquet", (str(f),)) for i, f in
                    enumerate(list_files(paths, (".parquet",)))]
        if len(paths) != 1:
            raise DataError(f"data.path: a list of inputs must be parquet files, got {cfg.path!r}")
        if cfg.streaming:
            raise DataError("data.streaming: a streamed dataset has no length to cut into shards; with --engine "
                            "ray use a saved dataset or its parquet files")
        n = len(iter_hf_dataset(paths[0], cfg.split, streaming=False))
        return [InputShard(f"{i:05d}", "dataset", dataset=paths[0], split=cfg.split, start=start,
                           stop=min(start + shard_rows, n))
                for i, start in enumerate(range(0, n, shard_rows))]
    raise DataError(f"data.source {cfg.source!r} has no raw documents to score")


def _paths(path) -> list[str]:
    if not path:
        raise DataError("data.path must be set for this data.source")
    return [str(p) for p in path] if isinstance(path, (list, tuple)) else [str(path)]


def _parquet_input(paths: list[str]) -> bool:
    """Whether every entry names parquet files (a .parquet file, a glob, a folder of them
    that is not a save_to_disk dataset)."""
    for p in paths:
        if p.endswith(".parquet") or any(c in p for c in "*?["):
            continue
        d = Path(p)
        if not (d.is_dir() and not is_saved_dataset(d) and any(d.rglob("*.parquet"))):
            return False
    return True


def _group_files(files: list[Path], shard_bytes: int) -> list[InputShard]:
    shards, group, size = [], [], 0
    for f in files:
        group.append(str(f))
        size += f.stat().st_size
        if size >= shard_bytes:
            shards.append(group)
            group, size = [], 0
    if group:
        shards.append(group)
    return [InputShard(f"{i:05d}", "files", tuple(g)) for i, g in enumerate(shards)]


def read_shard(shard: InputShard, text_field: str, stats: SourceStats, on_bad: str = "error") -> Iterator[dict]:
    """The shard's documents, {"text", "meta"}, as the local engine's source yields them."""
    if shard.kind == "files":
        return _read_files([Path(p) for p in shard.paths], stats, on_bad)
    if shard.kind == "jsonl":
        return _read_jsonl(Path(shard.paths[0]), text_field, stats, on_bad)
    if shard.kind == "parquet":
        return _read_hf(_parquet_rows(shard.paths[0]), shard.paths[0], text_field, stats, on_bad)
    if shard.kind == "dataset":
        rows = iter_hf_dataset(shard.dataset, shard.split, streaming=False).select(range(shard.start, shard.stop))
        return _offset_index(_read_hf(rows, shard.dataset, text_field, stats, on_bad), shard.start)
    raise ValueError(f"unknown shard kind {shard.kind!r}")


def _parquet_rows(path: str) -> Iterator[dict]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        yield from batch.to_pylist()


def _offset_index(docs: Iterator[dict], start: int) -> Iterator[dict]:
    # the source numbers rows from 0; the corpus numbers them from the shard's start
    for doc in docs:
        doc["meta"]["index"] += start
        yield doc
