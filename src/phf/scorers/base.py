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


class Scorer(ABC):
    #: registry name, set by @register_scorer
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

    def document_score(self, segments: Sequence[str], scores: Sequence[float]) -> float:
        """A document's `avg_score`: the length-weighted mean of its segment scores.

        With per-character scores (PEP8 violations per character, PII items per character)
        this is exactly "total items / total characters" of the document. Scorers whose
        scores are probabilities (toxicity) may override it with a plain mean.
        """
        total = sum(len(s) for s in segments)
        if total == 0:
            return 0.0
        return sum(len(s) * x for s, x in zip(segments, scores)) / total
