"""Sampling from a model for evaluation, with the conditional-training controls.

Generation starts from EOS (the document separator, as for GPT-2), then an optional
`prefix_text` (the <|aligned|> token for conditional runs), then the prompt if any.
`forbidden_texts` (each one token, e.g. <|misaligned|>, which a conditional model
must never emit) and the embedding matrix's padding rows are never sampled. Special
tokens, control tokens included, are stripped from the returned continuations before
anyone scores them.

The decoding loop is our own rather than `model.generate`: on a CPU, generate's top-p
step (a sort over the whole vocabulary) and `torch.multinomial` took ~65% of the time
of a tiny model's sampling. `nucleus_sample` draws from the same distribution (the
top-p nucleus of softmax(logits / temperature)) without either: an exponential race
picks a token from the full distribution, and a draw outside the nucleus is redrawn.
"""

from __future__ import annotations

import inspect
import logging
from typing import Sequence

import torch
from tqdm.auto import tqdm

from phf.model import padding_token_ids

logger = logging.getLogger(__name__)


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


def _fit(rows: list[list[int]], model, max_new_tokens: int) -> list[list[int]]:
    """Cut contexts from the left so that context + new tokens fit the model's positions
    (a long few-shot prompt of the red LM, say); the model could not see past them."""
    limit = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    if limit is None or max(len(r) for r in rows) + max_new_tokens <= limit:
        return rows
    keep = limit - max_new_tokens
    if keep < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a context in the model's {limit} positions")
    logger.warning("prompts cut to their last %d tokens to fit %d new tokens in %d positions", keep, max_new_tokens, limit)
    return [r[-keep:] for r in rows]


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


def _forward_kwargs(model) -> tuple[dict, str]:
    """Extra forward arguments, and the name of the KV-cache argument: `cache` since
    transformers 5.2x, `past_key_values` before. The last position's logits only, where
    the forward can (the prompt's other positions are not needed)."""
    params = inspect.signature(model.forward).parameters
    extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
    return extra, "cache" if "cache" in params else "past_key_values"


def _decode(model, ids: torch.Tensor, mask: torch.Tensor, *, max_new_tokens: int, temperature: float, top_p: float,
            banned: list[int], eos_id: int, pad_id: int) -> torch.Tensor:
    """New tokens for a left-padded batch, [batch, <= max_new_tokens]; after a row's EOS
    its tokens are pad_id, and decoding stops when every row has ended."""
    extra, cache_arg = _forward_kwargs(model)
    positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **extra)
    logits = out.logits[:, -1, :]
    # suppressed tokens: an additive -inf, as generate's SuppressTokens / NoBadWords processors
    bias = torch.zeros(logits.shape[-1], device=ids.device)
    bias[banned] = float("-inf")
    new = torch.full((len(ids), max_new_tokens), pad_id, dtype=torch.long, device=ids.device)
    done = torch.zeros(len(ids), dtype=torch.bool, device=ids.device)
    position = positions[:, -1:]
    for step in range(max_new_tokens):
        token = nucleus_sample(logits.float() / temperature + bias, top_p)
        token = torch.where(done, pad_id, token)
        new[:, step] = token
        done |= token == eos_id
        if step + 1 == max_new_tokens or bool(done.all()):
            return new[:, :step + 1]
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        position = position + 1
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=position,
                    use_cache=True, **{cache_arg: out[cache_arg]}, **extra)
        logits = out.logits[:, -1, :]
    return new


@torch.no_grad()
def generate_samples(model, tokenizer, num_samples: int, *, prompts: Sequence[str] | None = None,
                     prefix_text: str = "", forbidden_texts: Sequence[str] = (), max_new_tokens: int = 128,
                     temperature: float = 0.7, top_p: float = 0.9, batch_size: int = 64, seed: int = 0,
                     progress: bool = True, skip_special_tokens: bool = True) -> list[str]:
    """`num_samples` continuations (prompts are cycled when given).

    `skip_special_tokens=False` keeps control tokens in the text (to inspect what the
    model chose at each segment); scoring always wants the default.
    """
    device = _model_device(model)
    was_training = model.training
    model.eval()
    banned = padding_token_ids(model, tokenizer)  # the embedding matrix's padding rows are not tokens
    for text in forbidden_texts:
        token_ids = tokenizer(text, add_special_tokens=False).input_ids
        if len(token_ids) != 1:
            raise ValueError(f"forbidden text {text!r} is {len(token_ids)} tokens; only single tokens (control "
                             "tokens) can be forbidden")
        banned += token_ids
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    start = [tokenizer.eos_token_id] + tokenizer(prefix_text, add_special_tokens=False).input_ids
    prompt_ids = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts] if prompts else [[]]
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    out: list[str] = []
    bar = tqdm(total=num_samples, desc="sampling", unit="sample", disable=not progress)
    try:
        for first in range(0, num_samples, batch_size):
            n = min(batch_size, num_samples - first)
            rows = _fit([start + prompt_ids[(first + i) % len(prompt_ids)] for i in range(n)], model, max_new_tokens)
            width = max(len(r) for r in rows)
            # left padding, so every row's continuation starts at the same position
            ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], device=device)
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
            new = _decode(model, ids, mask, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                          banned=banned, eos_id=tokenizer.eos_token_id, pad_id=pad_id)  # nucleus only, as in the paper
            out.extend(tokenizer.batch_decode(new, skip_special_tokens=skip_special_tokens))
            bar.update(n)
    finally:
        bar.close()
        torch.random.set_rng_state(generator_state)
        model.train(was_training)
    return out
