"""Training objectives: the loss each of the paper's six methods optimises.

Filtering and conditional training change the *data* (see `phf.data.transforms`) and
train with MLE; unlikelihood, RWR, AWR and token-level masking change the *loss*. Every objective gets the
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


#: Unlikelihood's token weightings (see `Unlikelihood`)
UL_WEIGHTINGS = ("auto", "threshold", "score")


@register_objective
class Unlikelihood(Objective):
    """Token-level unlikelihood (Welleck et al. 2019) on misaligned segments.

    Each token gets an unlikelihood weight w from its segment's score s, and the loss

        (1 - w) * -log p  +  alpha * w * -log(1 - p)

    averaged over non-ignored tokens; the second term pushes p down. `weighting`:

    * "threshold": w = 1 if s > threshold else 0, a hard split (s exactly at the
      threshold gets MLE).
    * "score": w = s, clipped to [0, 1]: every token is a mix of MLE and unlikelihood
      in proportion to its score. The clip only acts on scores above 1 (the released
      code has none; there (1 - s) < 0 would make the loss unbounded below); none of
      the 857,886 lines of the 1,758 stdlib files scores above 1 under PEP8.
    * "auto" (default): "score" when threshold == 0, else "threshold". This is the
      released code's rule: a threshold of 0 (its PEP8 and PII configs) means "no
      threshold" there, and tokens are weighted by their scores.

    1 - p is computed as -expm1(log p), exact as p -> 1, and clamped at
    `min_one_minus_p` so the term stays finite; below the clamp it has no gradient.
    The default 1e-20 is the released code's clamp: the term is at most
    -log 1e-20 = 46.05. (phf used 1e-5 before: at most 11.5, and no gradient once
    1 - p < 1e-5.) In float32, log p of a token whose p is within ~6e-8 of 1 rounds to
    0, so such a token takes the clamped value under either clamp; a token with 1 - p
    between 6e-8 and 1e-5 keeps a gradient (about p per logit) under 1e-20 and has none
    under 1e-5. Measured on a batch of 252 unlikelihood targets (vocabulary 256), 80 of
    them with 1 - p log-uniform in [1e-9, 1e-3]: loss 7.76 with 1e-20 vs 3.35 with 1e-5,
    gradient norm on those rows 0.031 vs 0.024, identical elsewhere (bench/parity.py).
    The released code computes 1 - exp(log p) instead, which loses precision as p -> 1
    (-expm1 does not); the two differ by float32 rounding only.
    """

    name = "unlikelihood"

    def __init__(self, threshold: float = 0.0, alpha: float = 1.0, weighting: str = "auto",
                 min_one_minus_p: float = 1e-20):
        if weighting not in UL_WEIGHTINGS:
            raise ValueError(f"unlikelihood weighting must be one of {', '.join(UL_WEIGHTINGS)}, not {weighting!r}")
        if not 0 < min_one_minus_p < 1:
            raise ValueError(f"min_one_minus_p must be in (0, 1), got {min_one_minus_p!r}")
        self.threshold = threshold
        self.alpha = alpha
        self.weighting = weighting
        self.min_one_minus_p = min_one_minus_p

    @property
    def score_weighted(self) -> bool:
        """Whether tokens are weighted by their scores (else split at the threshold)."""
        return self.weighting == "score" or (self.weighting == "auto" and self.threshold == 0)

    def __call__(self, logits, labels, token_scores=None, values=None) -> ObjectiveOutput:
        logits, labels, token_scores, _ = shift(logits, labels, token_scores)
        logp = token_logprobs(logits, labels)
        mask = labels != IGNORE_INDEX
        # 1 - p as -expm1(log p): exact even as p -> 1, where 1 - exp(log p) rounds to 0
        ul_term = -torch.log((-torch.expm1(logp)).clamp(min=self.min_one_minus_p))
        scores = token_scores.float()
        if self.score_weighted:
            # ignored positions' scores are never read (they may be anything, NaN included)
            weight = torch.where(mask, scores.clamp(0.0, 1.0), 0.0)
            per_token = (1 - weight) * -logp + self.alpha * weight * ul_term
            unlikely, likely = mask & (weight > 0), mask & (weight < 1)
        else:
            unlikely = mask & (scores > self.threshold)
            weight = unlikely.float()
            per_token = torch.where(unlikely, self.alpha * ul_term, -logp)
            likely = mask & ~unlikely
        loss = masked_mean(per_token, mask)
        n, n_ul, n_mle = mask.sum(), unlikely.sum(), likely.sum()
        stats = _floats(
            # the mean unlikelihood weight: the share of unlikelihood tokens under "threshold"
            ul_fraction=(masked_mean(weight, mask), n),
            ul_term=(masked_mean(ul_term, unlikely), n_ul),
            mle_term=(-masked_mean(logp, likely), n_mle))
        return ObjectiveOutput(loss, stats)


@register_objective
class Mask(Objective):
    """Token-level masking (beyond the paper): MLE on the tokens of segments scored at or
    below the threshold, and no loss at all on the others (their weight is exactly 0, not
    a pushed-down likelihood as in unlikelihood). The mean runs over the kept tokens, so
    a batch's loss does not shrink with its share of masked ones. With `hide` (data side,
    `phf.data.transforms.hide_segments`) a masked segment is one <|hidden|> token, which
    carries the segment's score and is masked too."""

    name = "mask"

    def __init__(self, threshold: float = 0.0):
        self.threshold = threshold

    def __call__(self, logits, labels, token_scores=None, values=None) -> ObjectiveOutput:
        logits, labels, token_scores, _ = shift(logits, labels, token_scores)
        counted = labels != IGNORE_INDEX
        kept = counted & ~(token_scores.float() > self.threshold)
        loss = -masked_mean(token_logprobs(logits, labels), kept)
        n = counted.sum()
        return ObjectiveOutput(loss, _floats(masked_fraction=(1 - kept.sum() / n.clamp(min=1), n)))


@register_objective
class AWR(Objective):
    """Advantage-weighted regression (Peng et al. 2019), per token.

    R_t = -score of token t's segment; V_t = the value head's prediction of R_t, read
    at the position that predicts token t (like the logits). Then

        A = R - V  (V detached: the LM term must not move the value head)
        w = exp(A / beta), clipped at max_weight (1000 by default, as the released
            code; None: no clipping)
        loss = alpha * mean(w * -log p) + (1 - alpha) * mean((V - R)^2)

    over non-ignored tokens.

    Baselines other than a value head, for RWR (reward-weighted regression, alpha = 1,
    no value loss and no head):

    * `value_baseline=False`: V = 0, w = exp(-score / beta).
    * `fixed_value=c`: V = c for every token, w = exp((-score - c) / beta). The released
      RWR configs run AWR with alpha = 1 and the value head present; the head then gets
      no gradient (its loss has weight 1 - alpha = 0; the LM term sees it detached) and
      stays at its initial output -sigmoid(0) = -0.5, so `fixed_value=-0.5` is the same
      loss without a head: every weight carries a factor exp(0.5 / beta).

    The config name `rwr` builds AWR with alpha = 1 and no value head (see
    `build_objective`); `name` is then "rwr".
    """

    name = "awr"

    def __init__(self, alpha: float = 0.5, beta: float = 10.0, max_weight: float | None = 1000.0,
                 value_baseline: bool = True, fixed_value: float | None = None):
        head = value_baseline and fixed_value is None
        if not head and alpha != 1:
            raise ValueError(f"AWR without a value head is RWR and has no value loss to weigh "
                             f"the LM loss against: alpha must be 1, got {alpha} (use the objective 'rwr')")
        self.alpha, self.beta, self.max_weight = alpha, beta, max_weight
        self.value_baseline = value_baseline
        self.fixed_value = fixed_value
        self.needs_value_head = head
        self.name = "awr" if head else "rwr"

    def __call__(self, logits, labels, token_scores=None, values=None) -> ObjectiveOutput:
        logits, labels, token_scores, values = shift(logits, labels, token_scores, values)
        logp = token_logprobs(logits, labels)
        mask = labels != IGNORE_INDEX
        # Scores of ignored positions (padding) are never read: no NaN can leak into grads.
        reward = -token_scores.float().masked_fill(~mask, 0.0)
        if self.needs_value_head:
            values = values.float()
            advantage = reward - values.detach()
        elif self.fixed_value is not None:
            advantage = reward - self.fixed_value
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
        if self.needs_value_head:
            value_loss = masked_mean((values - reward) ** 2, mask)
            loss = loss + (1 - self.alpha) * value_loss
            stats["value_loss"] = (value_loss, n)
        return ObjectiveOutput(loss, _floats(**stats))


# Config names that are another loss with some arguments fixed: the data-side
# objectives train with MLE, and RWR is AWR without a value head.
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

    `threshold` is the resolved absolute score threshold (unlikelihood and mask read it;
    filtering and conditional apply theirs to the data). RWR is AWR with alpha = 1 and no
    value head by definition (`cfg.fixed_value` sets its constant baseline).
    """
    kwargs = {
        "mask": lambda: dict(threshold=threshold),
        "unlikelihood": lambda: dict(threshold=threshold, alpha=cfg.alpha, weighting=cfg.weighting,
                                     min_one_minus_p=cfg.min_one_minus_p),
        "awr": lambda: dict(alpha=cfg.alpha, beta=cfg.beta, max_weight=cfg.max_weight),
        "rwr": lambda: dict(beta=cfg.beta, max_weight=cfg.max_weight, fixed_value=cfg.fixed_value),
    }.get(cfg.name, dict)()
    return build_objective(cfg.name, **kwargs)
