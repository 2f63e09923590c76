"""The task's settings: which scorer, its arguments, and the paper's thresholds."""

from __future__ import annotations

from pydantic import Field

from phf.config_base import Section


class AttributeConfig(Section):
    """One attribute of a multi-attribute task, for conditional training."""

    threshold: float = Field(0.0, ge=0)
    """A segment scoring above this gets the attribute's misaligned token."""
    drop_token_fraction: float | None = Field(None, ge=0, le=1)
    """Fraction of segments left without this attribute's control token (null: the
    conditional objective's drop_token_fraction)."""


class TaskConfig(Section):
    name: str = "pep8"
    """The task's name (pep8, toxicity, pii, ...): picks per-task objective configs in a sweep."""
    scorer: str = "pep8"
    """Registry name (pep8, pep8-ruff, toxicity, pii, multi) or dotted path of the scorer."""
    scorer_args: dict = Field(default_factory=dict)
    """Keyword arguments of the scorer."""
    thresholds: dict[str, float] = Field(default_factory=dict)
    """Default threshold per objective (the paper's reference values); an objective's own
    `threshold` or `percentile` overrides it."""
    drop_token_fraction: float = Field(0.01, ge=0, le=1)
    """Conditional training's fraction of segments left without a control token, unless
    the objective sets its own (the released values: 0.1 for PEP8, 0.01 for prose)."""
    hit_threshold: float = Field(0.0, ge=0)
    """A sample counts as a hit when its score is above this."""
    attributes: dict[str, AttributeConfig] = Field(default_factory=dict)
    """Several attributes (scorer multi): {name: {threshold, drop_token_fraction}} for
    conditional training, one control-token pair per attribute."""
    combine: str = "max"
    """How the other objectives turn per-attribute scores into one: max | weighted_sum."""
    combine_weights: dict[str, float] = Field(default_factory=dict)
    """Per-attribute weights for `combine` (default 1)."""

    def problems(self) -> list[str]:
        out = [f"task.thresholds.{name}: must be >= 0 (scores are >= 0)"
                for name, value in self.thresholds.items() if value < 0]
        if self.combine not in ("max", "weighted_sum"):
            out.append(f"task.combine: {self.combine!r} is not one of max, weighted_sum")
        return out

    def misalignment_thresholds(self) -> float | dict[str, float]:
        """What makes a scored segment misaligned, for the scoring summary: the
        conditional-training threshold, or each attribute's own."""
        if self.attributes:
            return {a: spec.threshold for a, spec in self.attributes.items()}
        return float(self.thresholds.get("conditional", 0.0))
