"""Reading untrusted input: JSON lines, UTF-8 checks, datasets on disk, counted skips.

Shared by the raw-corpus sources (`phf.data.sources`) and the scored-record reader
(`phf.records`): a bad record raises `DataError` naming where it is, or, under the
skip policy, is counted in `SourceStats` by reason.
"""

from __future__ import annotations

import glob as globlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from phf.errors import DataError
from phf.paths import looks_local

log = logging.getLogger(__name__)


#: skipped records logged per reason; the rest are only counted (a corpus of
#: billions of records must not flood the log)
LOG_SKIPS_PER_REASON = 10


@dataclass
class SourceStats:
    """What a source read and what it skipped, by reason.

    Every record the source looked at is either read or skipped:
    `records_in == read + sum(skipped.values())`.
    """

    read: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    #: log the first skips per reason (off for a second pass over records already reported)
    log_skips: bool = True

    def skip(self, reason: str, where: str, detail: str | None = None) -> None:
        n = self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if n <= LOG_SKIPS_PER_REASON and self.log_skips:
            detail = (detail or reason).removeprefix(f"{where}: ")  # a DataError's message names `where` too
            log.warning("skipped %s: %s%s", where, detail,
                        " (further skips for this reason are only counted)" if n == LOG_SKIPS_PER_REASON else "")

    @property
    def records_in(self) -> int:
        return self.read + sum(self.skipped.values())

    def to_dict(self) -> dict:
        return {"records_in": self.records_in, "read": self.read, "skipped": dict(self.skipped)}


def bad_record(error: DataError, on_bad: str, stats: SourceStats, where: str) -> None:
    """Apply the bad-record policy: raise under "error", count under "skip"."""
    if on_bad == "error":
        raise error
    if on_bad != "skip":
        raise ValueError(f"on_bad must be 'error' or 'skip', not {on_bad!r}")
    stats.skip(error.reason, where, str(error))


def utf8_problem(text: str) -> str | None:
    """Why `text` cannot be written as UTF-8 (a lone surrogate from a JSON escape), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"lone surrogate {text[e.start]!r} at character {e.start}"
    return None


def parse_json_line(raw: bytes, where: str) -> dict:
    """Parse one JSONL line into a dict, or raise DataError naming the line."""
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: not valid UTF-8 (byte {e.start} of the line)", "not UTF-8") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: malformed JSON ({e})", "malformed JSON") from None
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}", "not a JSON object")
    return record


def is_saved_dataset(path: Path) -> bool:
    """Whether `path` is a folder written by `datasets`' save_to_disk: a Dataset (its
    dataset_info.json and state.json) or a DatasetDict (dataset_dict.json). A folder of
    phf's shards, with a state.json of its own, is not."""
    return path.is_dir() and ((path / "dataset_dict.json").exists()
                              or ((path / "dataset_info.json").exists() and (path / "state.json").exists()))


def iter_hf_dataset(name: str, split: str = "train", streaming: bool = False):
    """Rows of a `datasets` dataset: a save_to_disk directory, a data file, or a hub name.

    Only a name that is not a local path is looked up on the hub (a missing local
    file is an error here, not a download attempt).
    """
    local = Path(name).expanduser()
    if not local.exists() and looks_local(name):
        raise DataError(f"{name}: file or directory not found")
    import datasets

    if is_saved_dataset(local):
        ds = datasets.load_from_disk(str(local))
        return ds[split] if isinstance(ds, datasets.DatasetDict) else ds
    if local.is_file():
        kind = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}.get(local.suffix)
        if kind is None:
            raise DataError(f"{local}: unsupported file type for a datasets source")
        return datasets.load_dataset(kind, data_files=str(local), split="train", streaming=streaming)
    if local.is_dir():
        return datasets.load_dataset(str(local), split=split, streaming=streaming)
    try:
        return datasets.load_dataset(name, split=split, streaming=streaming)
    except ConnectionError as e:  # datasets' offline refusal and requests' network errors derive from it
        raise DataError(hub_unreachable(name, e)) from None


def hub_unreachable(name: str, error: Exception) -> str:
    """The one-line message for a name that is neither on disk nor in the hub cache,
    when the hub cannot be reached (offline mode, or no network)."""
    import os

    flags = [v for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
             if os.environ.get(v, "").lower() in ("1", "on", "yes", "true")]
    if flags:
        return (f"{name}: not on disk and not in the Hugging Face cache, and this machine is offline "
                f"({flags[0]}=1); give a local path (a file, a folder of shards or a save_to_disk folder), "
                f"or unset {flags[0]} to download it")
    return (f"{name}: not on disk and the hub could not be reached ({type(error).__name__}: {error}); "
            "give a local path, or check the network")


def list_files(spec: str | Path | Sequence[str | Path], suffixes: tuple[str, ...]) -> list[Path]:
    """The files named by `spec`: a file, a glob, a folder (its files with one of
    `suffixes`, recursively) or a list of any of these; sorted within each entry, in
    the list's order, without duplicates. Raises DataError when an entry names nothing."""
    entries = [spec] if isinstance(spec, (str, Path)) else list(spec)
    if not entries:
        raise DataError("no input files given")
    out: list[Path] = []
    for entry in entries:
        text = str(Path(entry).expanduser())
        p = Path(text)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(suffixes))
            what = f"{p}: no {' or '.join(suffixes)} files in this folder"
        elif any(c in text for c in "*?["):
            found = sorted(Path(f) for f in globlib.glob(text, recursive=True) if Path(f).is_file())
            what = f"{text}: no files match this glob"
        else:
            found = [p] if p.is_file() else []
            what = f"{p}: file not found"
        if not found:
            raise DataError(what)
        out += [f for f in found if f not in out]
    return out
