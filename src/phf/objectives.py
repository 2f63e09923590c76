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
To save memory, no objective builds more full-vocabulary tensors than MLE's
cross-entropy: per-token log-probabilities come from `token_logprobs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor
    stats: dict[str, float] = field(default_factory=dict)


def shift(logits, labels, token_scores=None, values=None):
    """Align position t's prediction with token t + 1."""
    out = [logits[:, :-1, :], labels[:, 1:]]
    out.append(None if token_scores is None else token_scores[:, 1:])
    out.append(None if values is None else values[:, :-1])
    return out


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(label) per position (0 where the label is ignored), in float32."""
    flat = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1),
        ignore_index=IGNORE_INDEX, reduction="none")
    return -flat.view(labels.shape)


class Objective:
    """Base class. Subclasses set `name` and implement `__call__`."""

    name = "objective"
    needs_value_head = False

    def __call__(self, logits, labels, token_scores=None, values=None) -> ObjectiveOutput:
        raise NotImplementedError


class MLE(Objective):
    """Plain next-token cross-entropy, averaged over non-ignored tokens."""

    name = "mle"

    def __call__(self, logits, labels, token_scores=None, values=None) -> ObjectiveOutput:
        logits, labels, _, _ = shift(logits, labels)
        loss = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1),
            ignore_index=IGNORE_INDEX)
        return ObjectiveOutput(loss)


_OBJECTIVES: dict[str, type[Objective]] = {"mle": MLE}


def register_objective(cls: type[Objective]) -> type[Objective]:
    _OBJECTIVES[cls.name] = cls
    return cls


def build_objective(name: str, **kwargs) -> Objective:
    """The loss for an objective config name. Data-side objectives use MLE."""
    loss_name = {"filtering": "mle", "conditional": "mle"}.get(name, name)
    if loss_name not in _OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; known: "
                         f"{', '.join(sorted(set(_OBJECTIVES) | {'filtering', 'conditional'}))}")
    return _OBJECTIVES[loss_name](**kwargs)
