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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from phf.config import DataConfig

log = logging.getLogger(__name__)


class DataError(ValueError):
    """Bad input, with the file, line or record and the field it concerns."""


@dataclass
class SourceStats:
    """What a source read and what it skipped, by reason."""

    read: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        log.warning("skipped %s: %s", where, reason)


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _files(root: Path, pattern: str, exclude: tuple[str, ...] = ()) -> list[Path]:
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    files = sorted(p for p in root.rglob(pattern)
                   if p.is_file() and not any(part in exclude for part in p.relative_to(root).parts))
    if not files:
        raise DataError(f"{root}: no files match {pattern!r}")
    return files


def iter_files(root: Path, pattern: str, stats: SourceStats, on_bad: str = "skip",
               exclude: tuple[str, ...] = ()) -> Iterator[dict]:
    for path in _files(root, pattern, exclude):
        try:
            with open(path, encoding="utf-8", newline="") as f:
                text = f.read()
        except UnicodeDecodeError as e:
            if on_bad == "error":
                raise DataError(f"{path}: not valid UTF-8 (byte {e.start})") from None
            stats.skip("not UTF-8", str(path))
            continue
        if not text.strip():
            stats.skip("empty document", str(path))
            continue
        yield {"text": text, "meta": {"path": str(path)}}


def iter_jsonl(path: Path, text_field: str, stats: SourceStats, on_bad: str = "error") -> Iterator[dict]:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            try:
                record = json.loads(raw)
                if not isinstance(record, dict):
                    raise DataError(f"{where}: expected a JSON object")
                text = record.get(text_field)
                if not isinstance(text, str):
                    raise DataError(f"{where}: field {text_field!r} missing or not a string")
            except (json.JSONDecodeError, UnicodeDecodeError, DataError) as e:
                msg = e if isinstance(e, DataError) else f"{where}: malformed JSON ({e})"
                if on_bad == "error":
                    raise DataError(str(msg)) from None
                stats.skip(str(msg).split(": ", 1)[1], where)
                continue
            if not text.strip():
                stats.skip("empty document", where)
                continue
            meta = dict(record.get("meta") or {})
            meta.setdefault("path", str(path))
            meta.setdefault("line", lineno)
            yield {"text": text, "meta": meta}


def iter_hf_dataset(name: str, split: str = "train", streaming: bool = False):
    """Rows of a `datasets` dataset: a save_to_disk directory, a data file, or a hub name."""
    import datasets

    local = Path(name)
    saved = ("dataset_info.json", "state.json", "dataset_dict.json")
    if local.is_dir() and any((local / f).exists() for f in saved):
        ds = datasets.load_from_disk(str(local))
        return ds[split] if isinstance(ds, datasets.DatasetDict) else ds
    if local.is_file():
        kind = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}.get(local.suffix)
        if kind is None:
            raise DataError(f"{local}: unsupported file type for a datasets source")
        return datasets.load_dataset(kind, data_files=str(local), split="train", streaming=streaming)
    if local.is_dir():
        return datasets.load_dataset(str(local), split=split, streaming=streaming)
    return datasets.load_dataset(name, split=split, streaming=streaming)


def iter_hf(name: str, split: str, text_field: str, streaming: bool, stats: SourceStats) -> Iterator[dict]:
    for i, record in enumerate(iter_hf_dataset(name, split, streaming)):
        text = record.get(text_field)
        if not isinstance(text, str) or not text.strip():
            stats.skip(f"field {text_field!r} missing or empty", f"{name}[{i}]")
            continue
        yield {"text": text, "meta": {"dataset": name, "index": i}}


def iter_documents(cfg: DataConfig, stats: SourceStats | None = None, on_bad: str = "error") -> Iterator[dict]:
    """Raw documents of the configured corpus, capped by max_documents / max_bytes."""
    stats = stats if stats is not None else SourceStats()
    if cfg.source == "stdlib":
        # site-packages is not the standard library; test data dirs hold broken files on purpose
        docs = iter_files(stdlib_dir(), "*.py", stats, "skip", exclude=("site-packages", "dist-packages"))
    elif cfg.source == "dir":
        docs = iter_files(Path(_need(cfg.path, "data.path")), cfg.glob, stats, on_bad)
    elif cfg.source == "jsonl":
        docs = iter_jsonl(Path(_need(cfg.path, "data.path")), cfg.text_field, stats, on_bad)
    elif cfg.source == "hf":
        docs = iter_hf(_need(cfg.path, "data.path"), cfg.split, cfg.text_field, cfg.streaming, stats)
    else:
        raise DataError(f"data.source {cfg.source!r} has no raw documents (use `phf train` on scored data)")
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
