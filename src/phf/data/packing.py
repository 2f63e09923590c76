"""Packing: scored documents -> fixed-length blocks of token ids and token scores.

Each document is tokenized whole (with control tokens inserted for conditional
training), and each token takes the score of the segment its first character lies
in. Each document is opened by EOS, which takes the score of the document's first
segment, as in the paper's released packing (its end-of-text token starts each
document, in the first segment's text); the stream is cut into blocks of
`block_size`. The tokens are the same as with EOS closing each document, except at
the ends of the stream; what changes is EOS's score as a target (predicted after the
previous document's last token): the next document's first-segment score, where
closing EOS would carry 0 (docs/PARITY.md).

A held-out split is drawn by document with a seeded RNG (`heldout_seed`, else `seed`),
so it is the same documents for every objective at the same seed; filtering applies to
the training split only.

Blocks stream to flat binary files (`<split>.ids` uint32, `<split>.scores` float32),
so memory stays flat however large the corpus; `PackedDataset` memory-maps them.
"""

from __future__ import annotations

import json
import os
import random
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from tqdm.auto import tqdm

from phf.data.transforms import add_attribute_control_tokens, hide_segments, keep_document, mark_segments
from phf.inputs import SourceStats
from phf.records import ScoredRecord

#: the label of a position that no loss reads (the Hugging Face convention)
IGNORE_INDEX = -100

SPLITS = ("train", "heldout")


@dataclass
class PackSpec:
    block_size: int = 256
    objective: str = "mle"
    threshold: float = 0.0
    drop_token_fraction: float = 0.0
    heldout_fraction: float = 0.02
    seed: int = 42
    #: seed of the held-out draw (None: `seed`), so that runs of other seeds hold out the same documents
    heldout_seed: int | None = None
    #: several attributes: {name: {threshold, drop_token_fraction}} for conditional training,
    #: and the rule that combines their scores for the other objectives
    attributes: dict = field(default_factory=dict)
    combine: str = "max"
    combine_weights: dict = field(default_factory=dict)
    #: fingerprint of the tokenizer the ids come from (`phf.tokenizer.tokenizer_fingerprint`):
    #: packed blocks are reused only with the same tokenizer
    tokenizer: str = ""
    #: bad scored records stopped the packing ("error") or were counted and left out ("skip")
    on_bad_record: str = "error"
    #: the objective's data form beyond the paper's (`phf.data.transforms.transform_spec`):
    #: a conditioning form and its quantile edges, or masking's hide; {} for the paper's
    transform: dict = field(default_factory=dict)


@dataclass
class PackStats:
    documents: dict = field(default_factory=lambda: {s: 0 for s in SPLITS})
    filtered_documents: int = 0
    tokens: dict = field(default_factory=lambda: {s: 0 for s in SPLITS})
    blocks: dict = field(default_factory=lambda: {s: 0 for s in SPLITS})
    #: the scored records read and skipped by reason (`phf.inputs.SourceStats.to_dict`)
    records: dict = field(default_factory=dict)


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


def token_byte_lengths(tokenizer) -> np.ndarray | None:
    """Bytes of text behind each token id, for a byte-level BPE (GPT-2 style), else None.

    In a byte-level BPE without a normalizer or prefix space, the tokens of a text
    partition its UTF-8 bytes, and a token's string has one character per byte (added
    tokens excepted: their text itself). Token starts are then a cumulative sum, which
    spares the tokenizer its offsets and Python a tuple per token.
    """
    from tokenizers import pre_tokenizers

    backend = tokenizer.backend_tokenizer
    pre = backend.pre_tokenizer
    if backend.normalizer is not None or not isinstance(pre, pre_tokenizers.ByteLevel) or pre.add_prefix_space:
        return None
    lengths = np.zeros(max(len(tokenizer), backend.get_vocab_size(with_added_tokens=True)), dtype=np.int64)
    for token, i in backend.get_vocab(with_added_tokens=False).items():
        lengths[i] = len(token)
    for i, added in backend.get_added_tokens_decoder().items():
        lengths[i] = len(added.content.encode("utf-8"))
    return lengths


def encode_documents(tokenizer, docs: list[tuple[list[str], list[float]]],
                     byte_lengths: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Token ids and per-token segment scores for each (segments, scores) document.

    With `byte_lengths` (from `token_byte_lengths`) token starts are counted in bytes
    from the ids; a document whose tokens do not add up to its bytes falls back to the
    tokenizer's character offsets. Either way a token gets the segment of its first
    character (a token that starts inside a multi-byte character: that character's).
    """
    backend = tokenizer.backend_tokenizer
    texts_joined = ["".join(texts) for texts, _ in docs]
    if byte_lengths is not None:
        encodings = backend.encode_batch_fast(texts_joined, add_special_tokens=False)
    else:
        encodings = backend.encode_batch(texts_joined, add_special_tokens=False)
    out = []
    for (texts, scores), text, enc in zip(docs, texts_joined, encodings):
        ids = np.asarray(enc.ids, dtype=np.int64)
        segment = None
        if byte_lengths is not None:
            sizes = byte_lengths[ids]
            seg_bytes = [len(t.encode("utf-8")) for t in texts]
            if sizes.sum() == sum(seg_bytes):
                token_starts = np.cumsum(sizes) - sizes
                segment = np.searchsorted(np.cumsum(seg_bytes[:-1]), token_starts, side="right")
            else:  # not a partition of the bytes: this document takes the exact route
                enc = backend.encode(text, add_special_tokens=False)
                ids = np.asarray(enc.ids, dtype=np.int64)
        if segment is None:
            offsets = enc.offsets  # built anew (a tuple per token) at each access: read it once
            token_starts = np.fromiter((o[0] for o in offsets), dtype=np.int64, count=len(offsets))
            segment = np.searchsorted(np.cumsum([len(t) for t in texts[:-1]]), token_starts, side="right")
        out.append((ids.astype(np.uint32), np.asarray(scores, dtype=np.float32)[segment]))
    return out


def pack(records: Iterable[ScoredRecord], tokenizer, spec: PackSpec, out_dir: str | Path,
         batch_documents: int = 256, total: int | None = None, batch_chars: int = 1 << 16,
         threads: int | None = None, source: SourceStats | None = None) -> PackStats:
    """Pack scored records into `out_dir` (train and held-out splits). `source`: the
    reader's counts of `records` (read, skipped), recorded in pack.json when given.

    Batches are tokenized on `threads` threads (default: the usable cores, at most 4;
    the Rust tokenizer releases the GIL), while the main thread reads the next records
    and writes blocks. Results are consumed in order, so the output does not depend
    on the number of threads.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    eos = np.asarray([tokenizer.eos_token_id], dtype=np.uint32)
    # separate streams, so the held-out split is the same documents for every objective
    split_rng = random.Random(spec.seed if spec.heldout_seed is None else spec.heldout_seed)
    drop_rng = random.Random(spec.seed + 1)
    stats = PackStats()
    writers = {s: _BlockWriter(out_dir, s, spec.block_size) for s in SPLITS}
    it = iter(records)
    bar = tqdm(total=total, desc="packing", unit="doc")
    threads = threads or min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    # (records in the batch, splits, first segments' scores, future of the encodings), oldest first
    in_flight: deque = deque()
    byte_lengths = token_byte_lengths(tokenizer)

    def write_oldest() -> None:
        n_records, splits, first_scores, encoded = in_flight.popleft()
        for split, first, (ids, scores) in zip(splits, first_scores, encoded.result()):
            # EOS opens the document with its first segment's score (the released packing)
            writers[split].add(np.concatenate([eos, ids]), np.concatenate([first, scores]))
            stats.documents[split] += 1
            stats.tokens[split] += len(ids) + 1
        bar.update(n_records)

    try:
        with ThreadPoolExecutor(threads, thread_name_prefix="pack") as pool:
            while batch := _next_batch(it, batch_documents, batch_chars):
                docs, splits, firsts = [], [], []
                for record in batch:
                    split = "heldout" if split_rng.random() < spec.heldout_fraction else "train"
                    texts = record.texts
                    scores = record.segment_scores(spec.combine, spec.combine_weights)
                    if spec.objective == "filtering" and split == "train" and \
                            not keep_document(record, spec.threshold, spec.combine, spec.combine_weights):
                        stats.filtered_documents += 1
                        continue
                    marked = scores  # the segments' scores after the transform (EOS keeps the first one's)
                    if spec.objective == "conditional":
                        texts, marked = _with_control_tokens(record, texts, scores, spec, drop_rng)
                    elif spec.transform.get("hide") and split == "train":
                        texts = hide_segments(texts, scores, spec.threshold)
                    docs.append((texts, marked))
                    splits.append(split)
                    firsts.append(np.asarray(scores[:1], dtype=np.float32))
                in_flight.append((len(batch), splits, firsts,
                                  pool.submit(encode_documents, tokenizer, docs, byte_lengths)))
                if len(in_flight) > threads:  # keep every thread busy, and memory to a few batches
                    write_oldest()
            while in_flight:
                write_oldest()
    finally:
        bar.close()
        for w in writers.values():
            w.close()
    for s in SPLITS:
        stats.blocks[s] = writers[s].blocks
    if source is not None:
        stats.records = source.to_dict()
    (out_dir / "pack.json").write_text(json.dumps({"spec": asdict(spec), "stats": asdict(stats)}, indent=2))
    return stats


def _next_batch(it, max_documents: int, max_chars: int) -> list[ScoredRecord]:
    """Up to `max_documents` records, cut once they hold `max_chars` characters, so that
    the tokenizer's output for a batch (~100 bytes per token) is bounded and peak memory
    does not grow with the corpus (a batch of large files would set it otherwise)."""
    batch, chars = [], 0
    for record in islice(it, max_documents):
        batch.append(record)
        chars += sum(len(t) for t in record.texts)
        if chars >= max_chars:
            break
    return batch


def _with_control_tokens(record: ScoredRecord, texts: list[str], scores: list[float], spec: PackSpec,
                         rng: random.Random) -> tuple[list[str], list[float]]:
    if not record.attributes:
        return mark_segments(texts, scores, spec.threshold, spec.drop_token_fraction, rng, spec.transform)
    if not spec.attributes:
        raise ValueError("multi-attribute records need task.attributes ({name: {threshold, "
                         "drop_token_fraction}}) for conditional training")
    return add_attribute_control_tokens(texts, record.scores, spec.attributes, rng), scores


class PackedDataset(torch.utils.data.Dataset):
    """Blocks of a packed split: {"input_ids", "labels", "token_scores"} per item.

    `ignore_ids` get label -100 (held-out evaluation leaves control tokens out of the
    loss and the token count, so conditional and MLE runs compare on the same text), and
    so do tokens whose score is NaN (a score-text prefix: `transforms.NO_LOSS`; score 0).
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
        scores = torch.from_numpy(self.scores[i].copy())
        no_loss = torch.isnan(scores)
        if no_loss.any():
            labels[no_loss] = IGNORE_INDEX
            scores[no_loss] = 0.0
        return {"input_ids": ids, "labels": labels, "token_scores": scores}
