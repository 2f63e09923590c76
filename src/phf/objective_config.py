"""Each objective's settings, owned by the objective: `objective.name` picks the class,
and only that objective's keys are accepted (an AWR key on an MLE run is an error).

Data-side objectives (filtering, conditional) transform the corpus and train with MLE;
loss-side objectives (unlikelihood, RWR, AWR, mask) change the loss (`phf.objectives`).
"""

from __future__ import annotations

from typing import Annotated, Literal, Union, get_args

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

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
    bucket of the corpus's segment scores, equal in count as ties allow (<|q0|> the best),
    the bucket edges computed once at train time and saved with the run; generation
    conditions on <|q0|> and forbids the others. score-text (beyond the paper): the
    segment's score written before it, e.g. "<0.25>", left out of the loss; generation
    conditions on "<0>". The threshold and multi-attribute tasks apply to tokens only."""
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


# --- objective schedules: several objectives in one run ------------------------------

#: the name of the schedule "objective" (not a loss of its own: its phases have those)
SCHEDULE = "schedule"


class Phase(Section):
    """One phase of a schedule: an objective from `start` (a fraction of the token budget)
    until the next phase starts (or the run ends)."""

    start: float = Field(ge=0, lt=1)
    """Where the phase starts, as a fraction of the token budget (training.num_tokens): its
    first optimizer step is the one nearest start x the run's steps. The first phase
    starts at 0; starts increase."""
    objective: ObjectiveConfig
    """The phase's objective and its settings, as for `objective` itself (no schedule)."""

    @field_validator("objective", mode="before")
    @classmethod
    def _known_objective(cls, value):
        if isinstance(value, dict):
            name = value.get("name", "mle")
            if name not in OBJECTIVE_CLASSES:
                raise PydanticCustomError("objective_name", "'{name}' is not one of {known}",
                                          {"name": name, "known": ", ".join(OBJECTIVES)})
            return {**value, "name": name}  # no name: MLE, as for `objective`
        return value


class ScheduleConfig(Section):
    """Several objectives in one run, one after the other: one optimizer (its state kept
    across phase changes) and one learning-rate schedule over the whole run; each phase
    trains on blocks packed with its own objective's data transform. E.g. MLE until 20%
    of the tokens, then conditional training:

        objective: {name: schedule, phases: [{start: 0, objective: {name: mle}},
                                             {start: 0.2, objective: {name: conditional}}]}
    """

    name: Literal["schedule"] = "schedule"
    phases: list[Phase] = Field(min_length=1)
    """The phases, each {start, objective}: start, a fraction of training.num_tokens in
    [0, 1), the first 0 and increasing, each phase at least one optimizer step long (its
    first step is the one nearest start x the run's steps); objective, an objective and
    its settings as for `objective` (not a schedule)."""

    def problems(self) -> list[str]:
        out = [p.replace("objective.", f"objective.phases[{i}].objective.", 1)
               for i, phase in enumerate(self.phases) for p in phase.objective.problems()]
        if self.phases[0].start != 0:
            out.append(f"objective.phases[0].start: the first phase starts at 0, got {self.phases[0].start}")
        for i in range(1, len(self.phases)):
            if self.phases[i].start <= self.phases[i - 1].start:
                out.append(f"objective.phases[{i}].start: starts must increase, got {self.phases[i].start} "
                           f"after {self.phases[i - 1].start}")
        return out

    def label(self) -> str:
        """"mle>conditional@0.2": the phases' objectives, each with its start after the first."""
        return ">".join(p.objective.name + (f"@{p.start:g}" if i else "") for i, p in enumerate(self.phases))


def phases_of(objective) -> list[tuple[float, Section]]:
    """[(start, objective config)] of a run's objective: its phases, or the objective alone from 0."""
    if objective.name == SCHEDULE:
        return [(p.start, p.objective) for p in objective.phases]
    return [(0.0, objective)]


def phase_first_steps(starts: list[float], max_steps: int) -> list[int]:
    """Each phase's first optimizer step (0-based): the step nearest start x max_steps."""
    return [round(s * max_steps) for s in starts]


def schedule_problems(objective, max_steps: int) -> list[str]:
    """A phase shorter than one optimizer step of the run's `max_steps` ("key: message" each)."""
    if objective.name != SCHEDULE or objective.problems():
        return []  # starts out of order are named by ScheduleConfig.problems
    firsts = phase_first_steps([p.start for p in objective.phases], max_steps) + [max_steps]
    return [f"objective.phases[{i}].start: the phase from {objective.phases[i].start:g} covers no optimizer step "
            f"of the run's {max_steps} (steps {firsts[i]} to {firsts[i + 1]}); lengthen it or raise "
            "training.num_tokens" for i in range(len(objective.phases)) if firsts[i + 1] <= firsts[i]]


#: a run's `objective`: one objective, or a schedule of them
RunObjectiveConfig = Annotated[Union[(*get_args(get_args(ObjectiveConfig)[0]), ScheduleConfig)],
                               Field(discriminator="name")]


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
