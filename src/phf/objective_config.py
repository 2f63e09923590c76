"""Each objective's settings, owned by the objective: `objective.name` picks the class,
and only that objective's keys are accepted (an AWR key on an MLE run is an error).

Data-side objectives (filtering, conditional) transform the corpus and train with MLE;
loss-side objectives (unlikelihood, RWR, AWR, mask) change the loss (`phf.objectives`).
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from phf.config_base import Section


class _Thresholded(Section):
    threshold: float | None = Field(None, ge=0)
    """Absolute misalignment threshold; null takes the task's default for this objective."""
    percentile: float | None = Field(None, ge=0, le=100)
    """Alternatively, the threshold as this percentile (0-100) of the corpus's scores
    (document scores for filtering, segment scores otherwise)."""

    def problems(self) -> list[str]:
        if self.threshold is not None and self.percentile is not None:
            return ["objective.percentile: set either objective.threshold or objective.percentile, not both"]
        return []


class MLEConfig(Section):
    """Plain next-token cross-entropy."""

    name: Literal["mle"] = "mle"


class FilteringConfig(_Thresholded):
    """MLE on the documents whose avg_score is at or below the threshold."""

    name: Literal["filtering"] = "filtering"


class ConditionalConfig(_Thresholded):
    """MLE on segments prefixed with <|aligned|> (score <= threshold) or <|misaligned|>."""

    name: Literal["conditional"] = "conditional"
    drop_token_fraction: float | None = Field(None, ge=0, le=1)
    """Fraction of segments left without a control token (null: the task's
    task.drop_token_fraction; the released values: 0.1 for PEP8, 0.01 for prose)."""
    attributes: list[str] | None = None
    """Multi-attribute tasks: the task attributes that get control tokens (null: all of
    task.attributes; one name trains a single-attribute model on the same data)."""
    conditioning: Literal["tokens", "quantiles", "score-text"] = "tokens"
    """What marks each segment. tokens (the paper): <|aligned|>/<|misaligned|>, split at the
    threshold. quantiles (Quark, beyond the paper): K tokens <|q0|>..<|qK-1|>, one per
    bucket of the corpus's segment scores (<|q0|> the best), the bucket edges computed once
    at train time and saved with the run; generation conditions on <|q0|> and forbids the
    others. score-text (beyond the paper): the segment's score written before it, e.g.
    "<0.25>", left out of the loss; generation conditions on "<0>". The threshold and
    multi-attribute tasks apply to tokens only."""
    quantiles: int | None = None
    """conditioning: quantiles: K, the number of buckets (at least 2; null: 4)."""

    def problems(self) -> list[str]:
        out = super().problems()
        if self.quantiles is not None and self.conditioning != "quantiles":
            out.append(f"objective.quantiles: only read with objective.conditioning: quantiles "
                       f"(it is {self.conditioning!r})")
        elif self.quantiles is not None and self.quantiles < 2:
            out.append(f"objective.quantiles: {self.quantiles} buckets cannot separate better from worse "
                       "segments; give at least 2")
        return out

    @property
    def num_quantiles(self) -> int:
        return 4 if self.quantiles is None else self.quantiles


class MaskConfig(_Thresholded):
    """Token-level masking (beyond the paper): every document is kept, and the tokens of
    segments scored above the threshold get no loss."""

    name: Literal["mask"] = "mask"
    hide: bool = False
    """Also hide the masked segments from the context: each is replaced by one <|hidden|>
    token in the training split (the held-out split keeps the text, for the held-out loss)."""


class UnlikelihoodConfig(_Thresholded):
    """MLE on aligned tokens, alpha * -log(1 - p) on misaligned ones."""

    name: Literal["unlikelihood"] = "unlikelihood"
    alpha: float = Field(1.0, ge=0)
    """Weight of the unlikelihood term."""
    weighting: Literal["auto", "threshold", "score"] = "auto"
    """threshold: MLE on tokens of segments scored <= threshold, alpha * -log(1 - p) above;
    score: each token mixes both by its segment's score s, -(1 - s) log p - alpha s log(1 - p);
    auto (the released code's rule): score when the threshold is 0, else threshold."""
    min_one_minus_p: float = Field(1e-20, gt=0, lt=1)
    """Clamp 1 - p at this value (1e-20 as the released code; see docs/PARITY.md)."""


class AWRConfig(Section):
    """Advantage-weighted regression with a value head."""

    name: Literal["awr"] = "awr"
    alpha: float = Field(0.5, ge=0, le=1)
    """Weight of the LM term; the value loss gets 1 - alpha."""
    beta: float = Field(10.0, gt=0)
    """Temperature of the weights exp(advantage / beta)."""
    max_weight: float | None = Field(1000.0, gt=0)
    """Clip weights at this value (1000 as the released code; null: no clipping)."""
    value_head: Literal["sigmoid", "linear"] = "sigmoid"
    """sigmoid: the released head (bias-free linear layer at zero, then -sigmoid: V in
    (-1, 0), -0.5 at the start); linear: an unbounded linear layer with a bias, V = 0 at
    the start."""
    detach_value_head: bool = False
    """The value head reads detached hidden states (no gradient into the trunk)."""


class RWRConfig(Section):
    """Reward-weighted regression: AWR with alpha = 1 and no value baseline."""

    name: Literal["rwr"] = "rwr"
    beta: float = Field(10.0, gt=0)
    """Temperature of the weights exp((-score - fixed_value) / beta)."""
    max_weight: float | None = Field(1000.0, gt=0)
    """Clip weights at this value (1000 as the released code; null: no clipping)."""
    fixed_value: float | None = None
    """A constant baseline V (null: 0). The released RWR configs run AWR with alpha = 1 and
    the value head present, which gets no gradient and stays at -0.5: fixed_value -0.5
    is that loss without a head (objectives/rwr.yaml)."""


ObjectiveConfig = Annotated[
    Union[MLEConfig, FilteringConfig, ConditionalConfig, UnlikelihoodConfig, AWRConfig, RWRConfig, MaskConfig],
    Field(discriminator="name")]

OBJECTIVE_CLASSES = {c.model_fields["name"].default: c for c in
                     (MLEConfig, FilteringConfig, ConditionalConfig, UnlikelihoodConfig, AWRConfig, RWRConfig,
                      MaskConfig)}
OBJECTIVES = tuple(OBJECTIVE_CLASSES)


def make_objective_config(name: str = "mle", **settings) -> Section:
    """The config of objective `name` with `settings` (validated: unknown keys refused)."""
    return OBJECTIVE_CLASSES[name](name=name, **settings)


def objective_threshold(objective, task_thresholds: dict[str, float]) -> float | None:
    """The absolute threshold of a thresholded objective: its own, else the task's default
    (0 when the task has none); None when it is a percentile to compute from the corpus."""
    if getattr(objective, "percentile", None) is not None:
        return None
    if getattr(objective, "threshold", None) is not None:
        return objective.threshold
    return float(task_thresholds.get(objective.name, 0.0))


def conditioning_problems(objectives, num_attributes: int, decoding) -> list[str]:
    """A conditioning form other than tokens where it cannot work: on a multi-attribute
    task, or under a decoding mode that uses the <|aligned|>/<|misaligned|> pair (`decoding`:
    the eval's DecodingConfig). `objectives`: the run's (a schedule's phases)."""
    out = []
    for form in sorted({getattr(o, "conditioning", "tokens") for o in objectives} - {"tokens"}):
        if num_attributes > 1:
            out.append(f"objective.conditioning: {form} marks one score per segment; a multi-attribute task "
                       "(task.attributes) trains with conditioning: tokens (a token pair per attribute)")
        if decoding.uses_tags:
            out.append(f"eval.decoding.mode: {decoding.label()} uses the <|aligned|>/<|misaligned|> pair, which "
                       f"objective.conditioning: {form} does not have; use plain or rerank (rank_by: scorer)")
    return out
