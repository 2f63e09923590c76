"""Objective-specific data transforms: the only data code an objective owns.

* filtering   — drop training documents whose `avg_score` is above the threshold;
* conditional — prefix each segment with <|aligned|> (score <= threshold) or
  <|misaligned|> (score > threshold), leaving a random `drop_token_fraction` of
  segments without a token so the model can also generate unconditionally.

Multi-attribute records (one score list per attribute) get one control token per
attribute for conditional training; the other objectives see one score per segment,
combined by the task's rule (`task.combine`: max or weighted_sum).

Thresholds are absolute, or a percentile of the corpus's scores (document scores for
filtering, segment scores for conditional training and the loss-side objectives).
"""

from __future__ import annotations

import random
from typing import Iterable

import numpy as np

from phf.inputs import SourceStats
from phf.objective_config import objective_threshold
from phf.records import ScoredRecord, read_scored
from phf.scorers.config import TaskConfig
from phf.tokenizer import ALIGNED, MISALIGNED, attribute_tokens


def keep_document(record: ScoredRecord, threshold: float, combine: str = "max",
                  weights: dict | None = None) -> bool:
    """Filtering: train only on documents at or below the threshold."""
    return record.document_score(combine, weights) <= threshold


def add_control_tokens(texts: list[str], scores: list[float], threshold: float,
                       drop_token_fraction: float, rng: random.Random) -> list[str]:
    """Conditional training: each segment gets its control token, except a dropped few."""
    out = []
    for text, score in zip(texts, scores):
        if rng.random() < drop_token_fraction:
            out.append(text)
        else:
            out.append((ALIGNED if score <= threshold else MISALIGNED) + text)
    return out


def add_attribute_control_tokens(texts: list[str], scores: dict[str, list[float]],
                                 attributes: dict[str, dict], rng: random.Random) -> list[str]:
    """Conditional training over several attributes: each segment gets one token per
    attribute, in the order of `attributes` ({name: {threshold, drop_token_fraction}}),
    e.g. <|toxicity:aligned|><|pii:misaligned|>. Each attribute's token is dropped on its
    own, with its own fraction, so the model also sees every subset unspecified."""
    out = []
    for i, text in enumerate(texts):
        prefix = []
        for name, spec in attributes.items():
            if rng.random() < spec.get("drop_token_fraction", 0.0):
                continue
            aligned, misaligned = attribute_tokens(name)
            prefix.append(aligned if scores[name][i] <= spec.get("threshold", 0.0) else misaligned)
        out.append("".join(prefix) + text)
    return out


def percentile_threshold(records: Iterable[ScoredRecord], percentile: float, per_document: bool,
                         combine: str = "max", weights: dict | None = None) -> float:
    """The `percentile` (0-100) of document or segment scores over `records`."""
    values: list[float] = []
    for r in records:
        if per_document:
            values.append(r.document_score(combine, weights))
        else:
            values.extend(r.segment_scores(combine, weights))
    if not values:
        raise ValueError("cannot compute a percentile threshold over an empty corpus")
    return float(np.percentile(np.asarray(values, dtype=np.float64), percentile))


def resolve_threshold(objective, task: TaskConfig, scored_path, on_bad: str = "error") -> float:
    """The absolute threshold of `objective` (an objective config): its own, the task's
    default, or a percentile of the scored corpus at `scored_path` (read only then, with
    the task's attributes checked and bad records handled by `on_bad`; skips are counted
    and logged by the packing pass, not here)."""
    t = objective_threshold(objective, task.thresholds)
    if t is not None:
        return t
    records = read_scored(scored_path, SourceStats(log_skips=False), on_bad, attributes=list(task.attributes))
    return percentile_threshold(records, objective.percentile,
                                per_document=objective.name == "filtering",
                                combine=task.combine, weights=task.combine_weights)
