"""The scored-record format: the contract between scoring and training.

    {"texts": [segment, ...], "scores": [score, ...], "avg_score": x, "meta": {...}}

`"".join(texts)` is the document; `scores[i]` is the misalignment score (>= 0) of
`texts[i]`. This is the format of the paper's scored datasets, so those train here
unchanged. Records are stored as JSONL or parquet, or read from any `datasets`
dataset (hub name or local directory) with these columns.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterator

from phf.data.sources import DataError, SourceStats


def validate_record(record, where: str) -> dict:
    """Check a scored record; raise DataError naming `where` and the field."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object")
    texts, scores = record.get("texts"), record.get("scores")
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise DataError(f"{where}: field 'texts' missing or not a list of strings")
    if not isinstance(scores, list):
        raise DataError(f"{where}: field 'scores' missing or not a list")
    if len(texts) != len(scores):
        raise DataError(f"{where}: 'texts' has {len(texts)} segments but 'scores' has {len(scores)}")
    for i, s in enumerate(scores):
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s < 0:
            raise DataError(f"{where}: field 'scores'[{i}] is {s!r}; scores must be finite and >= 0")
    if not texts or not "".join(texts):
        raise DataError(f"{where}: empty document")
    if "avg_score" not in record or record["avg_score"] is None:
        total = sum(len(t) for t in texts)
        record["avg_score"] = sum(len(t) * s for t, s in zip(texts, scores)) / total
    meta = record.get("meta") or {}
    record["meta"] = json.loads(meta) if isinstance(meta, str) else meta
    return record


def read_scored(path: str | Path, stats: SourceStats | None = None, on_bad: str = "error",
                split: str = "train") -> Iterator[dict]:
    """Scored records from a JSONL or parquet file, a saved dataset, or a hub dataset."""
    stats = stats if stats is not None else SourceStats()
    p = Path(path)
    if p.suffix == ".jsonl" or p.suffix == ".json":
        if not p.exists():
            raise DataError(f"{p}: file not found (run `phf score` first?)")
        rows = _jsonl_rows(p)
    elif p.suffix == ".parquet":
        if not p.exists():
            raise DataError(f"{p}: file not found (run `phf score` first?)")
        rows = _parquet_rows(p)
    else:
        rows = _dataset_rows(str(path), split)
    for where, row in rows:
        try:
            if isinstance(row, Exception):
                raise row
            record = validate_record(row, where)
        except DataError as e:
            if on_bad == "error":
                raise
            stats.skip(str(e).split(": ", 1)[-1], where)
            continue
        stats.read += 1
        yield record


def _jsonl_rows(p: Path):
    with open(p, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{p}:{lineno}"
            try:
                yield where, json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                yield where, DataError(f"{where}: malformed JSON ({e})")


def _parquet_rows(p: Path):
    import pyarrow.parquet as pq

    index = 0
    for batch in pq.ParquetFile(p).iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            yield f"{p}[{index}]", row
            index += 1


def _dataset_rows(name: str, split: str):
    from phf.data.sources import iter_hf_dataset

    for i, row in enumerate(iter_hf_dataset(name, split, streaming=not Path(name).exists())):
        yield f"{name}[{i}]", row


class ScoredWriter:
    """Appends scored records to JSONL (default) or parquet, by the file's suffix."""

    def __init__(self, path: str | Path, append: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._parquet = self.path.suffix == ".parquet"
        self._rows: list[dict] = []
        self._writer = None
        self._file = None if self._parquet else open(self.path, "a" if append else "w", encoding="utf-8")

    def write(self, record: dict) -> None:
        if self._parquet:
            self._rows.append(record)
            if len(self._rows) >= 1024:
                self._flush_parquet()
        else:
            self._file.write(json.dumps(record, ensure_ascii=False) + "\n")

    def _flush_parquet(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._rows:
            return
        rows = [{**r, "meta": json.dumps(r.get("meta", {}))} for r in self._rows]
        table = pa.Table.from_pylist(rows)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, table.schema)
        self._writer.write_table(table)
        self._rows = []

    def close(self) -> None:
        if self._parquet:
            self._flush_parquet()
            if self._writer is not None:
                self._writer.close()
        else:
            self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
