"""The scorer interface: a rule or a reward model that gives text a misalignment score.

Scores are *misalignment* scores: >= 0, higher is worse, 0 is perfect (reward = -score).
A scorer does two jobs:

* `score_document(text)` splits a training document into segments (lines for code,
  sentences for prose) and scores each one; `"".join(segments) == text` always.
* `score_texts(texts)` gives one score per whole text; evaluation uses it on samples.

Subclasses implement `segment` and `score_segments`, or override `score_document`
when a segment's score depends on its context (pycodestyle looks at the whole file).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

from phf.records import mean_score


class Scorer(ABC):
    #: the name it is registered under in phf.scorers (used in logs)
    name: str = ""

    @abstractmethod
    def segment(self, text: str) -> list[str]:
        """Split `text` into segments whose concatenation is exactly `text`."""

    @abstractmethod
    def score_segments(self, segments: Sequence[str]) -> list[float]:
        """One misalignment score per segment, each scored on its own."""

    def score_document(self, text: str) -> tuple[list[str], list[float]]:
        segments = self.segment(text)
        return segments, self.score_segments(segments)

    def score_documents(self, texts: Sequence[str]) -> list[tuple[list[str], list[float]]]:
        """Batched form of `score_document`; model-based scorers override it to batch."""
        return [self.score_document(t) for t in texts]

    def score_texts(self, texts: Sequence[str]) -> list[float]:
        """One score per whole text (used on generated samples)."""
        return self.score_segments(list(texts))

    #: how `document_score` averages segment scores: "mean" or "length_weighted"
    #: (see `document_average`); scorers that take it as an argument set it per instance
    document_average: str = "mean"

    def document_score(self, segments: Sequence[str], scores: Sequence[float]) -> float:
        """A document's `avg_score`, by `self.document_average` (see `document_average`)."""
        return document_average(segments, scores, self.document_average)


#: the ways a document's score is made from its segments' scores
DOCUMENT_AVERAGES = ("mean", "length_weighted")


def check_document_average(value: str) -> str:
    """`value` if it names a document average, else a ValueError listing the choices."""
    if value not in DOCUMENT_AVERAGES:
        raise ValueError(f"document_average must be one of {', '.join(DOCUMENT_AVERAGES)}, not {value!r}")
    return value


def document_average(segments: Sequence[str], scores: Sequence[float], how: str = "mean") -> float:
    """A document's score from its segments' scores (0 for a document without segments).

    * "mean": the plain mean of the segment scores. The paper's scored datasets (PEP8
      codeparrot, toxicity and PII Pile) set `avg_score` this way, so the paper's
      filtering thresholds (e.g. PEP8 0.002361) are on this scale.
    * "length_weighted": each segment weighted by its length in characters. With
      per-character scores (PEP8 violations, PII items) this is total items / total
      characters of the document, so a violation on a 3-character line weighs no more
      than one on a 90-character line. Its scale differs from "mean": a threshold
      must be set for it (see configs/tasks/pep8.yaml).
    """
    if check_document_average(how) == "mean":
        return mean_score(scores)
    total = sum(len(s) for s in segments)
    return sum(len(s) * x for s, x in zip(segments, scores)) / total if total else 0.0
