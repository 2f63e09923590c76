"""Where the corpus comes from and where its scored records go."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from phf.config_base import Section


class DataConfig(Section):
    source: Literal["stdlib", "dir", "jsonl", "hf", "scored"] = "stdlib"
    """The raw corpus: stdlib (this interpreter's standard library), dir (files under
    `path` matching `glob`), jsonl (`text_field` of each line of `path`), hf (a datasets
    dataset: hub name, save_to_disk folder or parquet file)."""
    path: str | None = None
    """The corpus file or folder (dir, jsonl, hf)."""
    text_field: str = Field("text", min_length=1)
    """The field holding a document's text (jsonl, hf)."""
    glob: str = "*.py"
    """Files to read under `path` (dir)."""
    split: str = "train"
    """The dataset split (hf)."""
    streaming: bool = False
    """Stream the dataset instead of downloading it whole (hf)."""
    max_documents: int | None = Field(None, gt=0)
    """Read at most this many documents (null: all)."""
    max_bytes: int | None = Field(None, gt=0)
    """Read documents until this many characters are read (null: all)."""
    scored_path: str | list[str] = "runs/scored.jsonl"
    """The scored corpus, written by `phf score` and read by `phf train`: a JSONL or
    parquet file, several, a glob, a folder of shards, or a dataset name."""
    heldout_fraction: float = Field(0.02, ge=0, lt=1)
    """Fraction of documents held out for the held-out loss (the same documents for
    every objective, and for every seed when `heldout_seed` is set)."""
    heldout_seed: int | None = None
    """Seed of the held-out draw (null: training.seed); a multi-seed sweep fixes it so that
    every seed's held-out loss is measured on the same documents."""
    num_workers: int | None = Field(None, gt=0)
    """Scoring processes (null: all cores)."""
    packed_path: str | None = None
    """Blocks packed by `phf pack` (a folder of packed shards and their tokenizer):
    training reads them and packs nothing."""

    def problems(self) -> list[str]:
        if self.source not in ("stdlib", "scored") and not self.path:
            return [f"data.path: must be set for data.source {self.source!r}"]
        return []
