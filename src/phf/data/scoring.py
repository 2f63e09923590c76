"""Scoring a corpus: documents in, scored records out, in parallel.

Documents go to a process pool in chunks (each worker builds its scorer once);
`imap` keeps the output in input order, so a run is reproducible. A document that
makes the scorer raise is a counted failure with its reason, never the end of the
run. Model-based scorers that batch on their own run with `num_workers=1`
(in-process), where `score_documents` sees a whole chunk at once.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from dataclasses import asdict, dataclass, field
from itertools import islice
from typing import Iterable, Iterator

from tqdm.auto import tqdm

from phf.data.records import ScoredWriter
from phf.scorers import Scorer, get_scorer

log = logging.getLogger(__name__)

_worker_scorer: Scorer | None = None


@dataclass
class ScoringSummary:
    documents: int = 0
    segments: int = 0
    characters: int = 0
    misaligned_segments: int = 0
    failed_documents: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    mean_segment_score: float = 0.0
    mean_document_score: float = 0.0
    threshold: float = 0.0

    @property
    def misaligned_fraction(self) -> float:
        return self.misaligned_segments / max(self.segments, 1)

    def to_dict(self) -> dict:
        return {**asdict(self), "misaligned_fraction": self.misaligned_fraction}


def _init_worker(name: str, kwargs: dict) -> None:
    global _worker_scorer
    _worker_scorer = get_scorer(name, **kwargs)


def _score_chunk(docs: list[dict]) -> list[dict]:
    return score_chunk(_worker_scorer, docs)


def score_chunk(scorer: Scorer, docs: list[dict]) -> list[dict]:
    """Score documents; a failure becomes {"error": reason, "meta": ...}."""
    try:
        results = scorer.score_documents([d["text"] for d in docs])
    except Exception:
        # one bad document must not fail its neighbours: retry one by one
        results = []
        for d in docs:
            try:
                results.append(scorer.score_document(d["text"]))
            except Exception as e:  # noqa: BLE001 - any scorer fault is counted, not fatal
                results.append(e)
    out = []
    for doc, result in zip(docs, results):
        if isinstance(result, Exception):
            out.append({"error": f"{type(result).__name__}: {result}", "meta": doc["meta"]})
            continue
        texts, scores = result
        out.append({"texts": texts, "scores": [float(s) for s in scores],
                    "avg_score": float(scorer.document_score(texts, scores)), "meta": doc["meta"]})
    return out


def _chunks(docs: Iterable[dict], size: int) -> Iterator[list[dict]]:
    it = iter(docs)
    while chunk := list(islice(it, size)):
        yield chunk


def score_corpus(docs: Iterable[dict], out_path: str, scorer: str, scorer_args: dict | None = None,
                 num_workers: int | None = None, chunk_size: int = 8, threshold: float = 0.0,
                 total: int | None = None) -> ScoringSummary:
    """Score `docs` with the named scorer and write scored records to `out_path`.

    `threshold` only feeds the summary's count of misaligned segments (score > threshold).
    """
    scorer_args = scorer_args or {}
    num_workers = num_workers or os.cpu_count() or 1
    summary = ScoringSummary(threshold=threshold)
    sum_seg = sum_doc = 0.0
    bar = tqdm(total=total, desc=f"scoring ({scorer})", unit="doc")
    with ScoredWriter(out_path) as writer:
        if num_workers == 1:
            local = get_scorer(scorer, **scorer_args)
            results = (score_chunk(local, c) for c in _chunks(docs, chunk_size))
            pool = None
        else:
            ctx = mp.get_context("spawn" if _has_threads() else "fork")
            pool = ctx.Pool(num_workers, initializer=_init_worker, initargs=(scorer, scorer_args))
            results = pool.imap(_score_chunk, _chunks(docs, chunk_size))
        try:
            for chunk in results:
                for record in chunk:
                    bar.update(1)
                    if "error" in record:
                        summary.failed_documents += 1
                        reason = record["error"].split(":", 1)[0]
                        summary.failures[reason] = summary.failures.get(reason, 0) + 1
                        log.warning("scorer failed on %s: %s", record["meta"], record["error"])
                        continue
                    writer.write(record)
                    summary.documents += 1
                    summary.segments += len(record["scores"])
                    summary.characters += sum(len(t) for t in record["texts"])
                    summary.misaligned_segments += sum(s > threshold for s in record["scores"])
                    sum_seg += sum(record["scores"])
                    sum_doc += record["avg_score"]
        finally:
            if pool is not None:
                pool.terminate()
            bar.close()
    summary.mean_segment_score = sum_seg / max(summary.segments, 1)
    summary.mean_document_score = sum_doc / max(summary.documents, 1)
    return summary


def _has_threads() -> bool:
    # forking a process that already runs torch's thread pools can deadlock
    import sys

    return "torch" in sys.modules
