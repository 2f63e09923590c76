"""log p(continuation | context) under a causal LM, batched: what KL's estimate, the
ratio judge's reranking and the held-out NLL of samples all ask of a model."""

from __future__ import annotations

from typing import Sequence

import torch


@torch.no_grad()
def continuation_logprobs(model, contexts: Sequence[list[int]], continuations: Sequence[list[int]],
                          exclude: Sequence[int] = (), batch_size: int = 32, pad_id: int = 0) -> list[float]:
    """Total log-probability (nats, float32) of each continuation after its context
    (token ids; the context is not scored). `exclude`d token ids are removed from the
    next-token distribution before normalising (control tokens, which a scored text
    never contains). Right padding with an attention mask; rows are sorted by length so
    that batches pad little."""
    device = next(model.parameters()).device
    rows = [list(c) + list(x) for c, x in zip(contexts, continuations)]
    banned = torch.tensor(sorted(set(exclude)), dtype=torch.long, device=device)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    result = [0.0] * len(rows)
    for first in range(0, len(order), batch_size):
        batch = order[first:first + batch_size]
        width = max(len(rows[i]) for i in batch)
        ids = torch.tensor([rows[i] + [pad_id] * (width - len(rows[i])) for i in batch], device=device)
        mask = torch.tensor([[1] * len(rows[i]) + [0] * (width - len(rows[i])) for i in batch], device=device)
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
        if len(banned):
            logits[..., banned] = float("-inf")
        token_lp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        for j, i in enumerate(batch):
            start = len(contexts[i]) - 1  # the first continuation token is predicted there
            result[i] = float(token_lp[j, start:start + len(continuations[i])].sum())
    return result
