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
from pathlib import Path
from typing import Iterable

import numpy as np

from phf.config import Config, objective_threshold
from phf.scorers.multi import attribute_scores, combine_scores
from phf.tokenizer import ALIGNED, MISALIGNED, attribute_tokens


def segment_scores(record: dict, combine: str = "max", weights: dict | None = None) -> list[float]:
    """One score per segment; a multi-attribute record's scores combined by the task's rule."""
    per_attribute = attribute_scores(record)
    return record["scores"] if per_attribute is None else combine_scores(per_attribute, combine, weights)


def document_score(record: dict, combine: str = "max", weights: dict | None = None) -> float:
    """The document's avg_score; a multi-attribute one combined by the task's rule."""
    avg = record["avg_score"]
    if isinstance(avg, dict):
        return combine_scores({a: [v] for a, v in avg.items()}, combine, weights)[0]
    return avg


def keep_document(record: dict, threshold: float, combine: str = "max", weights: dict | None = None) -> bool:
    """Filtering: train only on documents at or below the threshold."""
    return document_score(record, combine, weights) <= threshold


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


def percentile_threshold(records: Iterable[dict], percentile: float, per_document: bool,
                         combine: str = "max", weights: dict | None = None) -> float:
    """The `percentile` (0-100) of document or segment scores over `records`."""
    values: list[float] = []
    for r in records:
        if per_document:
            values.append(document_score(r, combine, weights))
        else:
            values.extend(segment_scores(r, combine, weights))
    if not values:
        raise ValueError("cannot compute a percentile threshold over an empty corpus")
    return float(np.percentile(np.asarray(values, dtype=np.float64), percentile))


def resolve_threshold(cfg: Config, scored_path: str | Path | None = None) -> float:
    """The absolute threshold for this run: configured, task default, or a corpus percentile."""
    t = objective_threshold(cfg)
    if t is not None:
        return t
    from phf.data.records import read_scored

    return percentile_threshold(read_scored(scored_path or cfg.data.scored_path), cfg.objective.percentile,
                                per_document=cfg.objective.name == "filtering",
                                combine=cfg.task.combine, weights=cfg.task.combine_weights)
