"""Packing: scored documents -> fixed-length blocks of token ids and token scores.

Each document is tokenized whole (with control tokens inserted for conditional
training), and each token takes the score of the segment its first character lies
in. Documents are joined with EOS and cut into blocks of `block_size`. A held-out
split is drawn by document with a seeded RNG, so it is the same documents for every
objective at the same seed; filtering applies to the training split only.

Blocks stream to flat binary files (`<split>.ids` uint32, `<split>.scores` float32),
so memory stays flat however large the corpus; `PackedDataset` memory-maps them.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from tqdm.auto import tqdm

from phf.data.transforms import add_attribute_control_tokens, add_control_tokens, keep_document, segment_scores
from phf.scorers.multi import attribute_scores
from phf.objectives import IGNORE_INDEX

SPLITS = ("train", "heldout")


@dataclass
class PackSpec:
    block_size: int = 256
    objective: str = "mle"
    threshold: float = 0.0
    drop_token_fraction: float = 0.0
    heldout_fraction: float = 0.02
    seed: int = 42
    #: several attributes: {name: {threshold, drop_token_fraction}} for conditional training,
    #: and the rule that combines their scores for the other objectives
    attributes: dict = field(default_factory=dict)
    combine: str = "max"
    combine_weights: dict = field(default_factory=dict)


@dataclass
class PackStats:
    documents: dict = field(default_factory=lambda: {s: 0 for s in SPLITS})
    filtered_documents: int = 0
    tokens: dict = field(default_factory=lambda: {s: 0 for s in SPLITS})
    blocks: dict = field(default_factory=lambda: {s: 0 for s in SPLITS})


class _BlockWriter:
    """Accumulates a token stream and writes whole blocks to disk."""

    def __init__(self, out_dir: Path, split: str, block_size: int):
        self.block_size = block_size
        self.ids_file = open(out_dir / f"{split}.ids", "wb")
        self.scores_file = open(out_dir / f"{split}.scores", "wb")
        self.ids: list[np.ndarray] = []
        self.scores: list[np.ndarray] = []
        self.pending = 0
        self.blocks = 0

    def add(self, ids: np.ndarray, scores: np.ndarray) -> None:
        self.ids.append(ids)
        self.scores.append(scores)
        self.pending += len(ids)
        if self.pending >= 64 * self.block_size:
            self._flush()

    def _flush(self) -> None:
        ids, scores = np.concatenate(self.ids), np.concatenate(self.scores)
        n = (len(ids) // self.block_size) * self.block_size
        ids[:n].astype(np.uint32).tofile(self.ids_file)
        scores[:n].astype(np.float32).tofile(self.scores_file)
        self.blocks += n // self.block_size
        self.ids, self.scores = [ids[n:]], [scores[n:]]
        self.pending = len(ids) - n

    def close(self) -> None:
        if self.pending:
            self._flush()  # the last partial block is dropped
        self.ids_file.close()
        self.scores_file.close()


def encode_documents(tokenizer, docs: list[tuple[list[str], list[float]]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Token ids and per-token segment scores for each (segments, scores) document."""
    backend = tokenizer.backend_tokenizer
    encodings = backend.encode_batch(["".join(texts) for texts, _ in docs], add_special_tokens=False)
    out = []
    for (texts, scores), enc in zip(docs, encodings):
        starts = np.cumsum([0] + [len(t) for t in texts[:-1]])
        offsets = enc.offsets  # built anew (a tuple per token) at each access: read it once
        token_starts = np.fromiter((o[0] for o in offsets), dtype=np.int64, count=len(offsets))
        segment = np.searchsorted(starts, token_starts, side="right") - 1
        out.append((np.asarray(enc.ids, dtype=np.uint32), np.asarray(scores, dtype=np.float32)[segment]))
    return out


def pack(records: Iterable[dict], tokenizer, spec: PackSpec, out_dir: str | Path,
         batch_documents: int = 256, total: int | None = None, batch_chars: int = 1 << 20) -> PackStats:
    """Pack scored records into `out_dir` (train and held-out splits)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    eos = np.asarray([tokenizer.eos_token_id], dtype=np.uint32)
    eos_score = np.zeros(1, dtype=np.float32)
    # separate streams, so the held-out split is the same documents for every objective
    split_rng, drop_rng = random.Random(spec.seed), random.Random(spec.seed + 1)
    stats = PackStats()
    writers = {s: _BlockWriter(out_dir, s, spec.block_size) for s in SPLITS}
    it = iter(records)
    bar = tqdm(total=total, desc="packing", unit="doc")
    try:
        while batch := _next_batch(it, batch_documents, batch_chars):
            docs, splits = [], []
            for record in batch:
                split = "heldout" if split_rng.random() < spec.heldout_fraction else "train"
                texts = record["texts"]
                scores = segment_scores(record, spec.combine, spec.combine_weights)
                if spec.objective == "filtering" and split == "train" and \
                        not keep_document(record, spec.threshold, spec.combine, spec.combine_weights):
                    stats.filtered_documents += 1
                    continue
                if spec.objective == "conditional":
                    texts = _with_control_tokens(record, texts, scores, spec, drop_rng)
                docs.append((texts, scores))
                splits.append(split)
            for split, (ids, scores) in zip(splits, encode_documents(tokenizer, docs)):
                writers[split].add(np.concatenate([ids, eos]), np.concatenate([scores, eos_score]))
                stats.documents[split] += 1
                stats.tokens[split] += len(ids) + 1
            bar.update(len(batch))
    finally:
        bar.close()
        for w in writers.values():
            w.close()
    for s in SPLITS:
        stats.blocks[s] = writers[s].blocks
    (out_dir / "pack.json").write_text(json.dumps({"spec": asdict(spec), "stats": asdict(stats)}, indent=2))
    return stats


def _next_batch(it, max_documents: int, max_chars: int) -> list[dict]:
    """Up to `max_documents` records, cut once they hold `max_chars` characters, so that
    the tokenizer's output for a batch (~100 bytes per token) is bounded and peak memory
    does not grow with the corpus (a batch of large files would set it otherwise)."""
    batch, chars = [], 0
    for record in islice(it, max_documents):
        batch.append(record)
        chars += sum(len(t) for t in record["texts"])
        if chars >= max_chars:
            break
    return batch


def _with_control_tokens(record: dict, texts: list[str], scores: list[float], spec: PackSpec,
                         rng: random.Random) -> list[str]:
    per_attribute = attribute_scores(record)
    if per_attribute is None:
        return add_control_tokens(texts, scores, spec.threshold, spec.drop_token_fraction, rng)
    if not spec.attributes:
        raise ValueError("multi-attribute records need task.attributes ({name: {threshold, "
                         "drop_token_fraction}}) for conditional training")
    return add_attribute_control_tokens(texts, per_attribute, spec.attributes, rng)


class PackedDataset(torch.utils.data.Dataset):
    """Blocks of a packed split: {"input_ids", "labels", "token_scores"} per item.

    `ignore_ids` get label -100 (held-out evaluation leaves control tokens out of the
    loss and the token count, so conditional and MLE runs compare on the same text).
    """

    def __init__(self, out_dir: str | Path, split: str = "train", ignore_ids: Iterable[int] = (),
                 max_blocks: int | None = None):
        out_dir = Path(out_dir)
        spec = json.loads((out_dir / "pack.json").read_text())["spec"]
        self.block_size = spec["block_size"]
        size = (out_dir / f"{split}.ids").stat().st_size // 4
        self.num_blocks = size // self.block_size
        if max_blocks is not None:
            self.num_blocks = min(self.num_blocks, max_blocks)
        shape = (size // self.block_size, self.block_size)
        self.ids = np.memmap(out_dir / f"{split}.ids", dtype=np.uint32, mode="r", shape=shape) if size else None
        self.scores = np.memmap(out_dir / f"{split}.scores", dtype=np.float32, mode="r", shape=shape) if size else None
        self.ignore_ids = torch.tensor(sorted(set(ignore_ids)), dtype=torch.long)

    def __len__(self) -> int:
        return self.num_blocks

    def __getitem__(self, i: int) -> dict:
        ids = torch.from_numpy(self.ids[i].astype(np.int64))
        labels = ids.clone()
        if len(self.ignore_ids):
            labels[torch.isin(labels, self.ignore_ids)] = IGNORE_INDEX
        return {"input_ids": ids, "labels": labels, "token_scores": torch.from_numpy(self.scores[i].copy())}
