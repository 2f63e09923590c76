"""Several preferences at once: one score per segment per attribute.

`MultiScorer` runs named scorers over the *same* segments, so a record keeps one
segmentation and gains a score list per attribute:

    {"texts": [...], "scores": {"toxicity": [...], "pii": [...]},
     "avg_score": {"toxicity": x, "pii": y}, "meta": {...}}

Single-attribute records (`scores` a list) stay valid everywhere (`phf.records.ScoredRecord`
reads either form). Objectives that need one score per token (filtering,
unlikelihood, RWR, AWR) get it from `phf.records.combine_scores` through an explicit
rule in the task config: the maximum over attributes, or a weighted sum.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from phf.records import combine_scores
from phf.scorers import get_scorer
from phf.scorers.base import Scorer
from phf.scorers.segment import get_segmenter


class MultiScorer(Scorer):
    """Scores each segment with every named scorer.

    Args:
        scorers: {attribute: {"name": registry name or dotted path, "args": {...}}}
        segmenter: how documents are split ("sentences" for prose, "lines" for code).
        combine, combine_weights: the rule for one score per whole text (`score_texts`);
            `task_scorer` passes the task's `combine` and `combine_weights`.
    """

    name = "multi"

    def __init__(self, scorers: Mapping[str, Mapping], segmenter: str = "sentences", combine: str = "max",
                 combine_weights: Mapping[str, float] | None = None):
        self.combine, self.combine_weights = combine, dict(combine_weights or {})

        if not scorers:
            raise ValueError("scorer 'multi' needs scorer_args.scorers: {attribute: {name: ..., args: {...}}}")
        self.attributes = list(scorers)
        self.scorers = {a: get_scorer(spec["name"], **(spec.get("args") or {})) for a, spec in scorers.items()}
        self._segment = get_segmenter(segmenter)

    def segment(self, text: str) -> list[str]:
        return self._segment(text)

    def score_segments(self, segments: Sequence[str]) -> dict[str, list[float]]:
        return {a: [float(x) for x in s.score_segments(segments)] for a, s in self.scorers.items()}

    def score_texts_by_attribute(self, texts: Sequence[str]) -> dict[str, list[float]]:
        """{attribute: one score per whole text}."""
        return {a: [float(x) for x in s.score_texts(texts)] for a, s in self.scorers.items()}

    def score_texts(self, texts: Sequence[str]) -> list[float]:
        """One score per text, the attributes combined by the task's rule (as for training)."""
        return combine_scores(self.score_texts_by_attribute(texts), self.combine, self.combine_weights)

    def document_score(self, segments, scores: Mapping[str, Sequence[float]]) -> dict[str, float]:
        return {a: float(self.scorers[a].document_score(segments, scores[a])) for a in self.attributes}
