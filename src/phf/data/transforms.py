"""Objective-specific data transforms: the only data code an objective owns.

* filtering   — drop training documents whose `avg_score` is above the threshold;
* conditional — prefix each segment with <|aligned|> (score <= threshold) or
  <|misaligned|> (score > threshold), leaving a random `drop_token_fraction` of
  segments without a token so the model can also generate unconditionally.

Thresholds are absolute, or a percentile of the corpus's scores (document scores for
filtering, segment scores for conditional training and the loss-side objectives).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterable

import numpy as np

from phf.config import Config, objective_threshold
from phf.tokenizer import ALIGNED, MISALIGNED


def keep_document(record: dict, threshold: float) -> bool:
    """Filtering: train only on documents at or below the threshold."""
    return record["avg_score"] <= threshold


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


def percentile_threshold(records: Iterable[dict], percentile: float, per_document: bool) -> float:
    """The `percentile` (0-100) of document or segment scores over `records`."""
    values: list[float] = []
    for r in records:
        if per_document:
            values.append(r["avg_score"])
        else:
            values.extend(r["scores"])
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
                                per_document=cfg.objective.name == "filtering")
