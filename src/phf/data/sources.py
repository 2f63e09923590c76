"""Corpus sources: where raw documents come from.

Every source yields `{"text": str, "meta": {...}}` with the document's provenance
(file path, or dataset name and index) in `meta`:

* ``stdlib`` — the Python files of the running interpreter's standard library
  (real code that is always present: the default PEP8 corpus);
* ``dir``    — every file matching `glob` under `path`, recursively;
* ``jsonl``  — one JSON object per line, the text under `text_field`;
* ``hf``     — a `datasets` dataset by hub name or local path (a `save_to_disk`
  directory, or a parquet/JSON file), optionally streamed.

Files are read as UTF-8 with newlines kept as they are (a scorer must see the
exact text). `max_documents` and `max_bytes` cap the corpus deterministically:
files in sorted order, records in file order.
"""

from __future__ import annotations

import json
import logging
import sysconfig
from pathlib import Path
from typing import Iterator

from phf.data.config import DataConfig
from phf.errors import DataError
from phf.inputs import SourceStats, bad_record, iter_hf_dataset, parse_json_line, utf8_problem

log = logging.getLogger(__name__)


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _files(root: Path, pattern: str, exclude: tuple[str, ...] = ()) -> list[Path]:
    if not root.exists():
        raise DataError(f"{root}: directory not found")
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    files = sorted(p for p in root.rglob(pattern)
                   if p.is_file() and not any(part in exclude for part in p.relative_to(root).parts))
    if not files:
        raise DataError(f"{root}: no files match {pattern!r}")
    return files


def iter_files(root: Path, pattern: str, stats: SourceStats, on_bad: str = "skip",
               exclude: tuple[str, ...] = ()) -> Iterator[dict]:
    """Files as documents. An empty file (an `__init__.py`) is a counted skip, never an error.

    A missing directory or one without matching files raises here, before any work.
    """
    return _read_files(_files(root, pattern, exclude), stats, on_bad)


def _read_files(files: list[Path], stats: SourceStats, on_bad: str) -> Iterator[dict]:
    for path in files:
        try:
            with open(path, encoding="utf-8", newline="") as f:
                text = f.read()
        except UnicodeDecodeError as e:
            bad_record(DataError(f"{path}: not valid UTF-8 (byte {e.start})", "not UTF-8"), on_bad, stats, str(path))
            continue
        except OSError as e:
            bad_record(DataError(f"{path}: cannot read ({e.strerror})", "unreadable file"), on_bad, stats, str(path))
            continue
        if not text.strip():
            stats.skip("empty document", str(path))
            continue
        yield {"text": text, "meta": {"path": str(path)}}


def iter_jsonl(path: Path, text_field: str, stats: SourceStats, on_bad: str = "error") -> Iterator[dict]:
    """One document per JSON line. Blank lines and empty documents are counted skips."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return _read_jsonl(path, text_field, stats, on_bad)


def _read_jsonl(path: Path, text_field: str, stats: SourceStats, on_bad: str) -> Iterator[dict]:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            if not raw.strip():
                stats.skip("blank line", where)
                continue
            try:
                record = parse_json_line(raw, where)
                text = record.get(text_field)
                if not isinstance(text, str):
                    raise DataError(f"{where}: field {text_field!r} missing or not a string",
                                    f"field {text_field!r} missing or not a string")
                if problem := utf8_problem(text):
                    raise DataError(f"{where}: field {text_field!r} is not valid UTF-8 ({problem})", "not UTF-8")
                meta = record.get("meta") or {}
                if not isinstance(meta, dict):
                    raise DataError(f"{where}: field 'meta' is not an object", "field 'meta' invalid")
                if meta and (problem := utf8_problem(json.dumps(meta, ensure_ascii=False))):
                    raise DataError(f"{where}: field 'meta' is not valid UTF-8 ({problem})", "not UTF-8")
            except DataError as e:
                bad_record(e, on_bad, stats, where)
                continue
            if not text.strip():
                stats.skip("empty document", where)
                continue
            meta = dict(meta)
            meta.setdefault("path", str(path))
            meta.setdefault("line", lineno)
            yield {"text": text, "meta": meta}


def iter_hf(name: str, split: str, text_field: str, streaming: bool, stats: SourceStats,
            on_bad: str = "error") -> Iterator[dict]:
    return _read_hf(iter_hf_dataset(name, split, streaming), name, text_field, stats, on_bad)


def _read_hf(rows, name: str, text_field: str, stats: SourceStats, on_bad: str) -> Iterator[dict]:
    for i, record in enumerate(rows):
        where = f"{name}[{i}]"
        text = record.get(text_field)
        if not isinstance(text, str):
            bad_record(DataError(f"{where}: field {text_field!r} missing or not a string",
                                 f"field {text_field!r} missing or not a string"), on_bad, stats, where)
            continue
        if not text.strip():
            stats.skip("empty document", where)
            continue
        yield {"text": text, "meta": {"dataset": name, "index": i}}


def iter_documents(cfg: DataConfig, stats: SourceStats | None = None, on_bad: str = "error") -> Iterator[dict]:
    """Raw documents of the configured corpus, capped by max_documents / max_bytes.

    A missing path raises here, before the first document is asked for. A bad record
    raises DataError (naming file, line and field) under `on_bad="error"`, or is
    counted in `stats` under `on_bad="skip"`.
    """
    stats = stats if stats is not None else SourceStats()
    if cfg.source == "stdlib":
        # site-packages is not the standard library; test data dirs hold broken files on purpose
        docs = iter_files(stdlib_dir(), "*.py", stats, "skip", exclude=("site-packages", "dist-packages"))
    elif cfg.source == "dir":
        docs = iter_files(Path(_need(cfg.path, "data.path")), cfg.glob, stats, on_bad)
    elif cfg.source == "jsonl":
        docs = iter_jsonl(Path(_need(cfg.path, "data.path")), cfg.text_field, stats, on_bad)
    elif cfg.source == "hf":
        docs = iter_hf(_need(cfg.path, "data.path"), cfg.split, cfg.text_field, cfg.streaming, stats, on_bad)
    else:
        raise DataError(f"data.source {cfg.source!r} has no raw documents (use `phf train` on scored data)")
    return _capped(docs, cfg, stats)


def _capped(docs: Iterator[dict], cfg: DataConfig, stats: SourceStats) -> Iterator[dict]:
    total = 0
    for doc in docs:
        if cfg.max_documents is not None and stats.read >= cfg.max_documents:
            return
        if cfg.max_bytes is not None and total >= cfg.max_bytes:
            return
        total += len(doc["text"])
        stats.read += 1
        yield doc


def _need(value, key: str):
    if not value:
        raise DataError(f"{key} must be set for this data.source")
    return value
