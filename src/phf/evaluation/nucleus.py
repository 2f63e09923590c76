"""Nucleus (top-p) sampling without a sort or `torch.multinomial`.

On a CPU, `generate`'s top-p step (a sort over the whole vocabulary) and
`torch.multinomial` took ~65% of the time of a tiny model's sampling. `nucleus_sample`
draws from the same distribution (the top-p nucleus of softmax(scores)): an exponential
race picks a token from the full distribution, and a draw outside the nucleus is redrawn.
"""

from __future__ import annotations

import torch


def _draw(probs: torch.Tensor) -> torch.Tensor:
    """One index per row with probability probs[row, index]: the exponential race
    argmax(p / E), E ~ Exp(1), which is exact and needs no cumulative sums."""
    race = torch.empty_like(probs).exponential_().clamp_(min=torch.finfo(probs.dtype).tiny)
    return (probs / race).argmax(dim=-1)


def _in_nucleus(probs: torch.Tensor, tokens: torch.Tensor, top_p: float) -> torch.Tensor:
    """Whether each row's token is in its top-p nucleus: the probability of the tokens
    more likely than it is < top_p (the most likely token always is)."""
    p_token = probs.gather(1, tokens[:, None])
    return torch.where(probs > p_token, probs, 0.0).sum(dim=-1) < top_p


def nucleus_sample(scores: torch.Tensor, top_p: float = 1.0, max_tries: int = 16) -> torch.Tensor:
    """A token per row from softmax(scores) restricted to its top-p nucleus (Holtzman et
    al. 2020): the smallest set of most likely tokens holding at least `top_p` of the mass,
    renormalised. Rejection sampling: a draw from the whole distribution lands in the
    nucleus with probability >= top_p, and one outside is redrawn, which leaves exactly
    the renormalised nucleus. Rows still rejected after `max_tries` (a tiny top_p) are
    drawn from the nucleus found by sorting."""
    probs = torch.softmax(scores.float(), dim=-1)
    tokens = _draw(probs)
    if top_p >= 1.0:
        return tokens
    rows = torch.arange(len(tokens), device=tokens.device)
    for _ in range(max_tries):
        rejected = ~_in_nucleus(probs[rows], tokens[rows], top_p)
        if not bool(rejected.any()):
            return tokens
        rows = rows[rejected]
        tokens[rows] = _draw(probs[rows])
    sub = probs[rows]
    order = sub.argsort(dim=-1, descending=True)
    ranked = sub.gather(1, order)
    keep = ranked.cumsum(dim=-1) - ranked < top_p  # the mass before each token is < top_p
    tokens[rows] = order.gather(1, _draw(ranked * keep)[:, None]).squeeze(1)
    return tokens
