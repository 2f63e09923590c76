"""Training objectives: the loss each of the paper's six methods optimises.

Filtering and conditional training change the *data* (see `phf.data.transforms`) and
train with MLE; unlikelihood, RWR and AWR change the *loss*. Every objective gets the
same inputs:

    logits        [B, T, V]  the model's next-token logits
    labels        [B, T]     token ids, unshifted (HF convention), -100 = ignore
    token_scores  [B, T]     misalignment score of each label token's segment
    values        [B, T]     value-head predictions (only if `needs_value_head`)

and returns an `ObjectiveOutput` with the scalar loss and statistics to log.
Position t predicts labels[t + 1]; objectives shift once, through `shift`.
Every loss is a weighting of the per-token log-probabilities from `token_logprobs`,
so no objective builds more full-vocabulary tensors than MLE's cross-entropy, and all
of them compute in float32 whatever the dtype of the logits (bf16 autocast).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from phf.data.packing import IGNORE_INDEX


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor
    stats: dict[str, float] = field(default_factory=dict)


def shift(logits, labels, token_scores=None, values=None):
    """Align position t's prediction (logits, value) with token t + 1.

    The targets move left, padded with IGNORE_INDEX (scores with 0), instead of the
    logits being cut to T - 1: a [B, T-1, V] slice is not contiguous, and cross-entropy
    would copy it, the largest tensor of the step. Every output keeps length T; the
    last position has no target.
    """
    labels = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    if token_scores is not None:
        token_scores = F.pad(token_scores[:, 1:], (0, 1))
    return logits, labels, token_scores, values


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(label) per position (0 where the label is ignored), in float32."""
    flat = F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1),
        ignore_index=IGNORE_INDEX, reduction="none")
    return -flat.view(labels.shape)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over mask (0 when the mask is empty, so such a batch adds no gradient)."""
    return torch.where(mask, x, 0.0).sum() / mask.sum().clamp(min=1)


def _floats(**stats: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
    """{name: (value, token count)} -> {name: value}, in one device-to-host copy.

    A statistic over no tokens (e.g. the unlikelihood term of a batch without
    misaligned segments) is left out rather than logged as a misleading 0.
    """
    flat = torch.stack([t.detach().float() for pair in stats.values() for t in pair]).tolist()
    return {name: v for name, v, n in zip(stats, flat[0::2], flat[1::2]) if n > 0}


class Objective:
    """Base class. Subclasses set `name` and implement `__call__`."""

    name = "objective"
    needs_value_head = False

    def __call__(self, logits, labels, token_scores=None, values=None) -> ObjectiveOutput:
        raise NotImplementedError


_OBJECTIVES: dict[str, type[Objective]] = {}


def register_objective(cls: type[Objective]) -> type[Objective]:
    _OBJECTIVES[cls.name] = cls
    return cls


@register_objective
class MLE(Objective):
    """Plain next-token cross-entropy, averaged over non-ignored tokens."""

    name = "mle"

    def __call__(self, logits, labels, token_scores=None, values=None) -> ObjectiveOutput:
        logits, labels, _, _ = shift(logits, labels)
        mask = labels != IGNORE_INDEX
        return ObjectiveOutput(-masked_mean(token_logprobs(logits, labels), mask))


@register_objective
class Unlikelihood(Objective):
    """Token-level unlikelihood (Welleck et al. 2019) on misaligned segments.

    Tokens of segments with score <= threshold get MLE, -log p; the others get
    alpha * -log(1 - p), which pushes their probability down. 1 - p is clamped at
    `min_one_minus_p`, so the term stays finite (at most -log 1e-5 = 11.5) as p -> 1;
    there it has no gradient, as in the reference implementation.
    """

    name = "unlikelihood"
    min_one_minus_p = 1e-5

    def __init__(self, threshold: float = 0.0, alpha: float = 1.0):
        self.threshold = threshold
        self.alpha = alpha

    def __call__(self, logits, labels, token_scores=None, values=None) -> ObjectiveOutput:
        logits, labels, token_scores, _ = shift(logits, labels, token_scores)
        logp = token_logprobs(logits, labels)
        mask = labels != IGNORE_INDEX
        unlikely = mask & (token_scores.float() > self.threshold)
        # 1 - p as -expm1(log p): exact even as p -> 1, where 1 - exp(log p) rounds to 0
        ul_term = -torch.log((-torch.expm1(logp)).clamp(min=self.min_one_minus_p))
        loss = masked_mean(torch.where(unlikely, self.alpha * ul_term, -logp), mask)
        likely = mask & ~unlikely
        n, n_ul, n_mle = mask.sum(), unlikely.sum(), likely.sum()
        stats = _floats(
            ul_fraction=(n_ul / n.clamp(min=1), n),
            ul_term=(masked_mean(ul_term, unlikely), n_ul),
            mle_term=(-masked_mean(logp, likely), n_mle))
        return ObjectiveOutput(loss, stats)


@register_objective
class AWR(Objective):
    """Advantage-weighted regression (Peng et al. 2019), per token.

    R_t = -score of token t's segment; V_t = the value head's prediction of R_t, read
    at the position that predicts token t (like the logits). Then

        A = R - V  (V detached: the LM term must not move the value head)
        w = exp(A / beta), clipped at max_weight when set
        loss = alpha * mean(w * -log p) + (1 - alpha) * mean((V - R)^2)

    over non-ignored tokens.

    RWR (reward-weighted regression) is this same code with `value_baseline=False`:
    A = R, w = exp(-score / beta), loss = mean(w * -log p); there is no value loss,
    so alpha must be 1 and no value head is needed. The config name `rwr` builds
    exactly that (see `build_objective`); `name` is then "rwr".
    """

    name = "awr"

    def __init__(self, alpha: float = 0.5, beta: float = 10.0, max_weight: float | None = None,
                 value_baseline: bool = True):
        if not value_baseline and alpha != 1:
            raise ValueError(f"AWR without a value baseline is RWR and has no value loss to weigh "
                             f"the LM loss against: alpha must be 1, got {alpha} (use the objective 'rwr')")
        self.alpha, self.beta, self.max_weight = alpha, beta, max_weight
        self.value_baseline = self.needs_value_head = value_baseline
        self.name = "awr" if value_baseline else "rwr"

    def __call__(self, logits, labels, token_scores=None, values=None) -> ObjectiveOutput:
        logits, labels, token_scores, values = shift(logits, labels, token_scores, values)
        logp = token_logprobs(logits, labels)
        mask = labels != IGNORE_INDEX
        # Scores of ignored positions (padding) are never read: no NaN can leak into grads.
        reward = -token_scores.float().masked_fill(~mask, 0.0)
        if self.value_baseline:
            values = values.float()
            advantage = reward - values.detach()
        else:
            advantage = reward
        log_weight = advantage / self.beta
        if self.max_weight is not None:  # clip before exp, so that exp never overflows
            log_weight = log_weight.clamp(max=math.log(self.max_weight))
        weight = torch.where(mask, log_weight.exp(), 0.0)
        lm_loss = masked_mean(weight * -logp, mask)
        loss = self.alpha * lm_loss
        n = mask.sum()
        stats = dict(
            lm_loss=(lm_loss, n),
            weight_min=(weight.masked_fill(~mask, math.inf).min(), n),
            weight_mean=(masked_mean(weight, mask), n),
            weight_max=(weight.max(), n),
            advantage_mean=(masked_mean(advantage, mask), n))
        if self.value_baseline:
            value_loss = masked_mean((values - reward) ** 2, mask)
            loss = loss + (1 - self.alpha) * value_loss
            stats["value_loss"] = (value_loss, n)
        return ObjectiveOutput(loss, _floats(**stats))


# Config names that are another loss with some arguments fixed: the data-side
# objectives train with MLE, and RWR is AWR without a value baseline.
_ALIASES: dict[str, tuple[str, dict]] = {
    "filtering": ("mle", {}),
    "conditional": ("mle", {}),
    "rwr": ("awr", {"alpha": 1.0, "value_baseline": False}),
}


def build_objective(name: str, **kwargs) -> Objective:
    """The loss for an objective config name. Data-side objectives use MLE."""
    loss_name, fixed = _ALIASES.get(name, (name, {}))
    if loss_name not in _OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; known: "
                         f"{', '.join(sorted(set(_OBJECTIVES) | set(_ALIASES)))}")
    return _OBJECTIVES[loss_name](**{**kwargs, **fixed})


def objective_from_config(cfg, threshold: float) -> Objective:
    """The loss object for an objective config (`phf.objective_config`).

    `threshold` is the resolved absolute score threshold (only unlikelihood reads it;
    filtering and conditional apply theirs to the data).
    """
    kwargs = {
        "unlikelihood": lambda: dict(threshold=threshold, alpha=cfg.alpha),
        "awr": lambda: dict(alpha=cfg.alpha, beta=cfg.beta, max_weight=cfg.max_weight),
        "rwr": lambda: dict(beta=cfg.beta, max_weight=cfg.max_weight),
    }.get(cfg.name, dict)()
    return build_objective(cfg.name, **kwargs)
