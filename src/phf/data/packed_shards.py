"""Several packed folders read as one dataset (the output of `phf pack`).

`phf pack` writes one packed folder per scored shard, each in the format of
`phf.data.packing.pack` (`<split>.ids`, `<split>.scores`, `pack.json`), plus the
tokenizer they were made with. Training reads them all, in folder-name order, as one
dataset: every process of a distributed run memory-maps the same files, and no
process packs anything.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Iterable

import torch

from phf.data.packing import PackedDataset, PackSpec
from phf.errors import DataError

#: spec fields that may differ between the shards of one corpus (each shard draws its
#: held-out documents and dropped control tokens from its own seed)
PER_SHARD_FIELDS = ("seed",)


def packed_folders(root: str | Path) -> list[Path]:
    """The finished packed folders under `root` (those with a pack.json), sorted by name;
    `root` itself when it is one."""
    root = Path(root)
    if (root / "pack.json").exists():
        return [root]
    if not root.is_dir():
        raise DataError(f"{root}: packed data not found (run `phf pack` first?)")
    folders = sorted(p.parent for p in root.glob("*/pack.json"))
    if not folders:
        raise DataError(f"{root}: no packed folders (no */pack.json) in this folder")
    return folders


def shard_spec(folder: Path) -> dict:
    """The folder's PackSpec as a dict; a key an older pack.json lacks had its default then."""
    return {**asdict(PackSpec()), **json.loads((folder / "pack.json").read_text())["spec"]}


class ShardedPackedDataset(torch.utils.data.ConcatDataset):
    """The blocks of a split over several packed folders, in folder-name order.

    With `expected_spec` (a PackSpec as a dict), every folder must have been packed
    with it (the seed excepted): same block size, objective, threshold, tokenizer.
    """

    def __init__(self, root: str | Path, split: str = "train", ignore_ids: Iterable[int] = (),
                 expected_spec: dict | None = None):
        self.folders = packed_folders(root)
        ignore_ids = list(ignore_ids)
        specs = [shard_spec(f) for f in self.folders]
        reference = expected_spec or specs[0]
        for folder, spec in zip(self.folders, specs):
            differ = [k for k in reference if k not in PER_SHARD_FIELDS and spec.get(k) != reference[k]]
            if differ:
                k = differ[0]
                raise DataError(f"{folder}: packed with {k}={spec.get(k)!r}, but this run needs {reference[k]!r}; "
                                "pack the scored shards again with this run's config (`phf pack`)")
        self.block_size = reference["block_size"]
        super().__init__([PackedDataset(f, split, ignore_ids=ignore_ids) for f in self.folders])
