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
import os
from pathlib import Path
from typing import Iterator

from phf.config import looks_local
from phf.data.sources import DataError, SourceStats, bad_record, parse_json_line, utf8_problem


def _bad_score(s) -> bool:
    return isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s < 0


def score_columns(scores) -> list[tuple[str, object]]:
    """[(field name for messages, score list)]: one for a single-attribute record,
    one per attribute for a multi-attribute one ({"toxicity": [...], "pii": [...]})."""
    if isinstance(scores, dict):
        return [(f"'scores'[{a!r}]", v) for a, v in scores.items()]
    return [("'scores'", scores)]


def validate_record(record, where: str) -> dict:
    """Check a scored record; raise DataError naming `where` and the field.

    `scores` is a list (one score per segment), or for several attributes a mapping
    {attribute: list}, with `avg_score` a number or a mapping of the same attributes.
    """
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}", "not a JSON object")
    texts, scores = record.get("texts"), record.get("scores")
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise DataError(f"{where}: field 'texts' missing or not a list of strings", "field 'texts' invalid")
    if not isinstance(scores, (list, dict)) or scores == {}:
        raise DataError(f"{where}: field 'scores' missing or not a list (or a mapping of attributes to lists)",
                        "field 'scores' invalid")
    for name, column in score_columns(scores):
        if not isinstance(column, list):
            raise DataError(f"{where}: field {name} is not a list", "field 'scores' invalid")
        if len(texts) != len(column):
            raise DataError(f"{where}: field 'texts' has {len(texts)} segments but field {name} has {len(column)}",
                            "'texts' and 'scores' differ in length")
        for i, s in enumerate(column):
            if _bad_score(s):
                raise DataError(f"{where}: field {name}[{i}] is {s!r}; scores must be finite and >= 0",
                                "score NaN, infinite, negative or not a number")
    document = "".join(texts)
    if not document:
        raise DataError(f"{where}: empty document (field 'texts' joins to '')", "empty document")
    if problem := utf8_problem(document):
        raise DataError(f"{where}: field 'texts' is not valid UTF-8 ({problem})", "not UTF-8")
    avg = record.get("avg_score")
    if avg is None:  # the plain mean of the segment scores, as the paper's datasets and Scorer.document_score
        def mean(column):
            return sum(column) / len(column)  # not empty: the document is not
        record["avg_score"] = {a: mean(c) for a, c in scores.items()} if isinstance(scores, dict) else mean(scores)
    else:
        expected = set(scores) if isinstance(scores, dict) else None
        if expected is not None and (not isinstance(avg, dict) or set(avg) != expected):
            raise DataError(f"{where}: field 'avg_score' must map the attributes of 'scores' "
                            f"({', '.join(sorted(expected))}) to numbers, got {avg!r}", "field 'avg_score' invalid")
        for name, value in (avg.items() if expected is not None else [(None, avg)]):
            if _bad_score(value):
                field_name = "'avg_score'" + (f"[{name!r}]" if name is not None else "")
                raise DataError(f"{where}: field {field_name} is {value!r}; it must be finite and >= 0",
                                "score NaN, infinite, negative or not a number")
    meta = record.get("meta") or {}
    if isinstance(meta, str):  # parquet stores meta as a JSON string
        try:
            meta = json.loads(meta)
        except json.JSONDecodeError:
            raise DataError(f"{where}: field 'meta' is not valid JSON", "field 'meta' invalid") from None
    if not isinstance(meta, dict):
        raise DataError(f"{where}: field 'meta' is not an object", "field 'meta' invalid")
    record["meta"] = meta
    return record


def read_scored(path: str | Path, stats: SourceStats | None = None, on_bad: str = "error",
                split: str = "train") -> Iterator[dict]:
    """Scored records from a JSONL or parquet file, a saved dataset, or a hub dataset.

    A bad record raises DataError (file, line or record index, and field) under
    `on_bad="error"`, or is counted in `stats.skipped` under `on_bad="skip"`;
    `stats.read + sum(stats.skipped.values())` is the number of records in the file.
    A missing local file raises here, before any record is read.
    """
    stats = stats if stats is not None else SourceStats()
    p = Path(path)
    if p.suffix in (".jsonl", ".json", ".parquet") or looks_local(str(path)):
        if not p.exists():
            raise DataError(f"{p}: file not found (run `phf score` first?)")
    if p.suffix in (".jsonl", ".json"):
        rows = _jsonl_rows(p)
    elif p.suffix == ".parquet":
        rows = _parquet_rows(p)
    else:
        rows = _dataset_rows(str(path), split)
    return _validated(rows, stats, on_bad)


def _validated(rows, stats: SourceStats, on_bad: str) -> Iterator[dict]:
    for where, row in rows:
        if row is None:  # a blank line: not a record
            stats.skip("blank line", where)
            continue
        try:
            if isinstance(row, Exception):
                raise row
            record = validate_record(row, where)
        except DataError as e:
            bad_record(e, on_bad, stats, where)
            continue
        stats.read += 1
        yield record


def _jsonl_rows(p: Path):
    with open(p, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{p}:{lineno}"
            if not raw.strip():
                yield where, None
                continue
            try:
                yield where, parse_json_line(raw, where)
            except DataError as e:
                yield where, e


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
    """Writes scored records to JSONL (default) or parquet, by the file's suffix.

    JSONL is appended line by line (`append=True` continues a file), so after a crash
    the file is a prefix of the output plus at most one partial last line, which
    `complete_lines` cuts off. Parquet cannot be appended to: it is written to
    `<path>.partial` and renamed to `path` only when closed without an error, so a
    half-written parquet file is never taken for a finished one.
    """

    def __init__(self, path: str | Path, append: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._parquet = self.path.suffix == ".parquet"
        self._partial = self.path.with_name(self.path.name + ".partial")
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

    def flush(self) -> None:
        """Hand what was written to the OS (it then survives a kill of this process)."""
        if self._file is not None:
            self._file.flush()

    def _flush_parquet(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._rows:
            return
        rows = [{**r, "meta": json.dumps(r.get("meta", {}))} for r in self._rows]
        table = pa.Table.from_pylist(rows)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._partial, table.schema)
        self._writer.write_table(table)
        self._rows = []

    def close(self, complete: bool = True) -> None:
        if self._parquet:
            if complete:
                self._flush_parquet()
            if self._writer is not None:
                self._writer.close()
                if complete:
                    os.replace(self._partial, self.path)
        else:
            self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self.close(complete=exc_type is None)


def complete_lines(path: str | Path) -> int:
    """The number of complete (newline-terminated) lines in `path`, cutting off a partial
    last line that a killed writer left behind. 0 when the file does not exist."""
    path = Path(path)
    if not path.exists():
        return 0
    count, end, offset = 0, 0, 0
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            n = block.count(b"\n")
            if n:
                count += n
                end = offset + block.rindex(b"\n") + 1
            offset += len(block)
    if end != offset:
        with open(path, "r+b") as f:
            f.truncate(end)
    return count
