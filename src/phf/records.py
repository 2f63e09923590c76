"""The scored record: the contract between scoring and training, in one type.

    {"texts": [segment, ...], "scores": [score, ...], "avg_score": x, "meta": {...}}

`"".join(texts)` is the document; `scores[i]` is the misalignment score (>= 0) of
`texts[i]`. This is the format of the paper's scored datasets, so those train here
unchanged. With several attributes (`scorer: multi`), `scores` maps each attribute to
its list and `avg_score` each attribute to its document score:

    {"texts": [...], "scores": {"toxicity": [...], "pii": [...]},
     "avg_score": {"toxicity": x, "pii": y}, "meta": {...}}

`ScoredRecord` holds either form behind one interface: `columns` (per attribute, with
the key None for a single-attribute record), `segment_scores` and `document_score`
(one value per segment / document, several attributes combined by the task's rule).
Records are stored as JSONL or parquet, or read from any `datasets` dataset.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence, Union

from phf.errors import DataError
from phf.inputs import (SourceStats, bad_record, is_saved_dataset, iter_hf_dataset, list_files, parse_json_line,
                        utf8_problem)
from phf.paths import looks_local

#: how several attributes' scores become one per segment (see `combine_scores`)
COMBINE_RULES = ("max", "weighted_sum")

Scores = Union[list[float], dict[str, list[float]]]


def combine_scores(per_attribute: Mapping[str, Sequence[float]], rule: str = "max",
                   weights: Mapping[str, float] | None = None) -> list[float]:
    """One score per segment from several attributes' scores.

    "max": a segment is as bad as its worst attribute (scores must share a scale for
    the max to be meaningful: set weights to rescale, e.g. PII per character x 100).
    "weighted_sum": sum of weight x score (weights default to 1).
    """
    if rule not in COMBINE_RULES:
        raise ValueError(f"task.combine {rule!r} is not one of {', '.join(COMBINE_RULES)}")
    weights = weights or {}
    columns = [[weights.get(a, 1.0) * x for x in s] for a, s in per_attribute.items()]
    if rule == "max":
        return [max(xs) for xs in zip(*columns)]
    return [sum(xs) for xs in zip(*columns)]


def mean_score(scores: Sequence[float]) -> float:
    """A document's score from its segments' scores when the record has none: the plain
    mean over segments, as in the paper's scored datasets."""
    return sum(scores) / len(scores) if scores else 0.0


@dataclass
class ScoredRecord:
    texts: list[str]
    #: one score per segment, or {attribute: one score per segment}
    scores: Scores
    #: the document's score, or {attribute: score}
    avg_score: float | dict[str, float]
    meta: dict = field(default_factory=dict)

    @property
    def document(self) -> str:
        return "".join(self.texts)

    @property
    def attributes(self) -> list[str]:
        """The attribute names of a multi-attribute record; [] for a single-attribute one."""
        return list(self.scores) if isinstance(self.scores, dict) else []

    def columns(self) -> dict[str | None, list[float]]:
        """{attribute: segment scores}; the single attribute of a plain record is None."""
        return dict(self.scores) if isinstance(self.scores, dict) else {None: self.scores}

    def averages(self) -> dict[str | None, float]:
        """{attribute: document score}, keyed like `columns`."""
        return dict(self.avg_score) if isinstance(self.avg_score, dict) else {None: self.avg_score}

    def segment_scores(self, combine: str = "max", weights: Mapping[str, float] | None = None) -> list[float]:
        """One score per segment; several attributes combined by the task's rule."""
        if isinstance(self.scores, dict):
            return combine_scores(self.scores, combine, weights)
        return self.scores

    def document_score(self, combine: str = "max", weights: Mapping[str, float] | None = None) -> float:
        """The document's avg_score; several attributes combined by the task's rule."""
        if isinstance(self.avg_score, dict):
            return combine_scores({a: [v] for a, v in self.avg_score.items()}, combine, weights)[0]
        return self.avg_score

    def to_json(self) -> dict:
        return {"texts": self.texts, "scores": self.scores, "avg_score": self.avg_score, "meta": self.meta}

    @classmethod
    def from_json(cls, row, where: str, attributes: Sequence[str] | None = None) -> "ScoredRecord":
        """Check a stored record; raise DataError naming `where` and the field.

        `attributes`: the attributes the task declares (None or empty: one score list, or
        any attributes); a multi-attribute record must have exactly these. A record
        without `avg_score` gets the plain mean of its segment scores.
        """
        return _parse(row, where, attributes)


def _bad_score(s) -> bool:
    return isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s < 0


def _attribute_problem(scores, attributes: Sequence[str], where: str) -> DataError | None:
    """A record whose attributes are not the task's: it would stop conditional training
    on a missing one, or change the combined score with a foreign one."""
    declared = ", ".join(attributes)
    if not isinstance(scores, dict):
        return DataError(f"{where}: field 'scores' is one list, but the task declares the attributes {declared}; "
                         "score the corpus with the task's scorer (scorer multi)", "attribute missing")
    missing = [a for a in attributes if a not in scores]
    if missing:
        return DataError(f"{where}: field 'scores' has no attribute {missing[0]!r} (the task declares {declared}; "
                         f"the record has {', '.join(scores) or 'none'})", "attribute missing")
    extra = [a for a in scores if a not in attributes]
    if extra:
        return DataError(f"{where}: field 'scores' has the attribute {extra[0]!r}, which the task does not "
                         f"declare (it declares {declared})", "attribute not declared")
    return None


def _parse(record, where: str, attributes: Sequence[str] | None = None) -> ScoredRecord:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}", "not a JSON object")
    texts, scores = record.get("texts"), record.get("scores")
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise DataError(f"{where}: field 'texts' missing or not a list of strings", "field 'texts' invalid")
    if not isinstance(scores, (list, dict)) or scores == {}:
        raise DataError(f"{where}: field 'scores' missing or not a list (or a mapping of attributes to lists)",
                        "field 'scores' invalid")
    if attributes and (problem := _attribute_problem(scores, attributes, where)):
        raise problem
    columns = scores.items() if isinstance(scores, dict) else [(None, scores)]
    for name, column in columns:
        label = "'scores'" + (f"[{name!r}]" if name is not None else "")
        if not isinstance(column, list):
            raise DataError(f"{where}: field {label} is not a list", "field 'scores' invalid")
        if len(texts) != len(column):
            raise DataError(f"{where}: field 'texts' has {len(texts)} segments but field {label} has {len(column)}",
                            "'texts' and 'scores' differ in length")
        for i, s in enumerate(column):
            if _bad_score(s):
                raise DataError(f"{where}: field {label}[{i}] is {s!r}; scores must be finite and >= 0",
                                "score NaN, infinite, negative or not a number")
    document = "".join(texts)
    if not document:
        raise DataError(f"{where}: empty document (field 'texts' joins to '')", "empty document")
    if problem := utf8_problem(document):
        raise DataError(f"{where}: field 'texts' is not valid UTF-8 ({problem})", "not UTF-8")
    avg = record.get("avg_score")
    if avg is None:
        avg = {a: mean_score(c) for a, c in scores.items()} if isinstance(scores, dict) else mean_score(scores)
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
    return ScoredRecord(texts, scores, avg, meta)


#: file suffixes of stored scored records
SCORED_SUFFIXES = (".jsonl", ".json", ".parquet")


def scored_files(spec: str | Path | Sequence[str | Path]) -> list[Path]:
    """The scored-record files named by `spec`: a file, a glob, a folder of shards (its
    .jsonl and .parquet files, sorted, without the failure lists that `phf score` writes
    beside them) or a list of these. DataError when an entry names no file."""
    files = [f for f in list_files(spec, (".parquet", ".jsonl"))
             if not f.name.endswith("failures.jsonl")]
    if not files:
        raise DataError(f"{spec}: no scored records (parquet or JSONL) found")
    return files


def scored_sources(path: str | Path | Sequence[str | Path]) -> list[str]:
    """What `data.scored_path` names: scored-record files (see `scored_files`), or a
    `datasets` dataset (a save_to_disk folder, or a hub name)."""
    if isinstance(path, (list, tuple)):
        return [s for p in path for s in scored_sources(p)]
    p = Path(str(path)).expanduser()
    saved = is_saved_dataset(p)
    local = p.exists() or any(c in str(path) for c in "*?[") or looks_local(str(path))
    if saved or not local or (p.is_file() and p.suffix not in SCORED_SUFFIXES):
        return [str(path)]
    if p.is_file():
        return [str(p)]
    return [str(f) for f in scored_files(path)]


def read_scored(path: str | Path | Sequence[str | Path], stats: SourceStats | None = None, on_bad: str = "error",
                split: str = "train", attributes: Sequence[str] | None = None) -> Iterator[ScoredRecord]:
    """Scored records from JSONL or parquet files (one, several, a glob or a folder of
    shards), a saved dataset, or a hub dataset.

    A bad record raises DataError (file, line or record index, and field) under
    `on_bad="error"`, or is counted in `stats.skipped` under `on_bad="skip"`;
    `stats.read + sum(stats.skipped.values())` is the number of records read.
    `attributes` (the task's, see `ScoredRecord.from_json`) are checked per record.
    A missing local file raises here, before any record is read.
    """
    stats = stats if stats is not None else SourceStats()
    sources = scored_sources(path)
    for name in sources:
        p = Path(name)
        if (p.suffix in SCORED_SUFFIXES or looks_local(name)) and not p.exists():
            raise DataError(f"{p}: file not found (run `phf score` first?)")
    return _validated((row for name in sources for row in _rows(name, split)), stats, on_bad,
                      list(attributes or ()))


def _rows(name: str, split: str):
    p = Path(name)
    if p.suffix in (".jsonl", ".json"):
        return _jsonl_rows(p)
    if p.suffix == ".parquet":
        return _parquet_rows(p)
    return _dataset_rows(name, split)


def _validated(rows, stats: SourceStats, on_bad: str, attributes: list[str]) -> Iterator[ScoredRecord]:
    for where, row in rows:
        if row is None:  # a blank line: not a record
            stats.skip("blank line", where)
            continue
        try:
            if isinstance(row, Exception):
                raise row
            record = _parse(row, where, attributes)
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

    def write(self, record: ScoredRecord) -> None:
        row = record.to_json()
        if self._parquet:
            self._rows.append(row)
            if len(self._rows) >= 1024:
                self._flush_parquet()
        else:
            self._file.write(json.dumps(row, ensure_ascii=False) + "\n")

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
