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

Beyond the paper (`objective.conditioning`, `objective.hide`; docs/PARITY.md):

* conditional, quantiles — the control token is the segment's bucket among K buckets
  of the corpus's segment scores (equal in count as ties allow), <|q0|> (best) to <|qK-1|>;
* conditional, score-text — the segment's score written before it ("<0.25>"), as a
  segment of its own whose tokens get no loss (score NaN in the packed blocks);
* mask, hide — each segment above the threshold is replaced by one <|hidden|> token.

`transform_spec` resolves what these need before packing (the quantile edges), into the
pack spec's `transform`; it is empty for the paper's forms, whose blocks are unchanged.
"""

from __future__ import annotations

import random
from typing import Iterable

import numpy as np

from phf.errors import ConfigError
from phf.inputs import SourceStats
from phf.objective_config import objective_threshold
from phf.records import ScoredRecord, read_scored
from phf.scorers.config import TaskConfig
from phf.tokenizer import ALIGNED, HIDDEN, MISALIGNED, add_control_tokens as add_tokenizer_control_tokens
from phf.tokenizer import attribute_tokens, quantile_tokens

#: the score of a token that no loss reads (a score-text prefix); packing turns it into label -100
NO_LOSS = float("nan")


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


def quantile_bucket(score: float, edges: list[float]) -> int:
    """The bucket of `score` among the K - 1 inner `edges` (ascending): the number of edges
    strictly below it, so a score equal to an edge takes the better bucket and, where many
    scores tie (a corpus mostly at 0), the tied ones all share the best bucket they reach."""
    return int(np.searchsorted(np.asarray(edges, dtype=np.float64), score, side="left"))


def score_text(score: float) -> str:
    """The text prefix of conditioning: score-text, two significant digits: <0>, <0.25>, <0.0028>."""
    return f"<{score:.2g}>"


#: the prefix generation conditions on under score-text: the best score
BEST_SCORE_TEXT = score_text(0.0)


def mark_segments(texts: list[str], scores: list[float], threshold: float, drop_token_fraction: float,
                  rng: random.Random, transform: dict) -> tuple[list[str], list[float]]:
    """Conditional training in the form `transform["conditioning"]` (absent: tokens):
    (segments, their scores). A score-text prefix is a segment of its own with score
    NO_LOSS. Each segment draws from `rng` once, as in `add_control_tokens`."""
    form = transform.get("conditioning", "tokens")
    if form == "tokens":
        return add_control_tokens(texts, scores, threshold, drop_token_fraction, rng), scores
    out_texts, out_scores = [], []
    for text, score in zip(texts, scores):
        if rng.random() >= drop_token_fraction:
            if form == "quantiles":
                text = quantile_tokens(transform["quantiles"])[quantile_bucket(score, transform["edges"])] + text
            else:
                out_texts.append(score_text(score))
                out_scores.append(NO_LOSS)
        out_texts.append(text)
        out_scores.append(score)
    return out_texts, out_scores


def hide_segments(texts: list[str], scores: list[float], threshold: float) -> list[str]:
    """Token-level masking, hide: each segment above the threshold becomes one <|hidden|>
    (it keeps its score, so the mask objective gives the placeholder no loss either)."""
    return [HIDDEN if score > threshold else text for text, score in zip(texts, scores)]


def add_objective_tokens(tokenizer, objective, attributes: list[str] | None = None) -> int:
    """Add the special tokens that `objective`'s data uses to `tokenizer`; returns how many
    were new: the paper's control tokens (a pair per attribute for several), the quantile
    tokens, the hide placeholder, or none."""
    if objective.name == "mask":
        return tokenizer.add_tokens([HIDDEN], special_tokens=True) if objective.hide else 0
    if objective.name != "conditional":
        return 0
    if objective.conditioning == "quantiles":
        return tokenizer.add_tokens(quantile_tokens(objective.num_quantiles), special_tokens=True)
    if objective.conditioning == "score-text":
        return 0
    return add_tokenizer_control_tokens(tokenizer, attributes)


def quantile_edges(records: Iterable[ScoredRecord], k: int, combine: str = "max",
                   weights: dict | None = None) -> list[float]:
    """The inner edges of K buckets of the segment scores over `records`, as equal in
    count as ties allow: each edge is the 1/(K - i) quantile of the scores above the
    previous edge. Without ties these are the K-quantiles; where many scores tie (PEP8 and
    PII corpora are mostly 0) the tied scores fill the better bucket and the remaining
    buckets split the rest equally, instead of collapsing onto one edge. Fewer than K - 1
    edges when the scores run out (a corpus of one score: none)."""
    values = np.sort(np.asarray([s for r in records for s in r.segment_scores(combine, weights)], dtype=np.float64))
    if not len(values):
        raise ValueError("cannot compute quantile edges over an empty corpus")
    edges: list[float] = []
    for i in range(k - 1):
        edge = float(np.quantile(values, 1 / (k - i)))
        values = values[values > edge]
        if not len(values):
            break
        edges.append(edge)
    return edges


def transform_spec(objective, task: TaskConfig, scored_path, on_bad: str = "error") -> dict:
    """The pack spec's `transform`: what the objective's data form needs beyond the
    threshold ({} for the paper's forms). The quantile edges read the scored corpus once."""
    if objective.name == "mask" and objective.hide:
        return {"hide": True}
    if objective.name != "conditional" or objective.conditioning == "tokens":
        return {}
    if objective.conditioning == "score-text":
        return {"conditioning": "score-text"}
    if not scored_path:
        raise ConfigError("objective.conditioning: quantiles computes its bucket edges from the scored corpus: "
                          "set data.scored_path")
    records = read_scored(scored_path, SourceStats(log_skips=False), on_bad, attributes=list(task.attributes))
    edges = quantile_edges(records, objective.num_quantiles, task.combine, task.combine_weights)
    return {"conditioning": "quantiles", "quantiles": objective.num_quantiles, "edges": edges}


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
