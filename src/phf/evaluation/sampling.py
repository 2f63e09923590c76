"""Sampling from a model for evaluation, with the conditional-training controls.

Generation starts from EOS (the document separator, as for GPT-2), then an optional
`prefix_text` (the <|aligned|> token for conditional runs), then the prompt if any.
`forbidden_texts` (each one token, e.g. <|misaligned|>, which a conditional model
must never emit) and the embedding matrix's padding rows are never sampled. Special
tokens, control tokens included, are stripped from the returned continuations before
anyone scores them.

`decoding` (an `eval.decoding` section) picks a decoding mode: plain (the default),
retag, guidance and tag-aware (the loop in `decoding.py`), or rerank (best of n
candidates, here). The decoding loop is our own rather than `model.generate`, for speed
on a CPU (`nucleus.py`) and for the modes that roll segments back.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from phf.evaluation.config import DecodingConfig
from phf.evaluation.decoding import PLAIN, Plan, decode
from phf.evaluation.logprobs import continuation_logprobs
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


def _decode(model, ids: torch.Tensor, mask: torch.Tensor, **kwargs) -> torch.Tensor:
    """One left-padded batch through the decoding loop (a seam the tests watch)."""
    return decode(model, ids, mask, **kwargs)


def twin(misaligned: str) -> str:
    """The aligned control token of a misaligned one: <|misaligned|> -> <|aligned|>,
    <|pii:misaligned|> -> <|pii:aligned|>."""
    return misaligned.replace("misaligned|>", "aligned|>")


def segment_boundaries(tokenizer, segment: Callable[[str], list[str]]) -> tuple[list[bool], Callable]:
    """(may_end, is_boundary) for the decoding loop: which tokens can end a segment (their
    text ends in whitespace: a newline, or the space after a sentence), and whether the
    text of the current segment's tokens ends where `segment` (the task's segmenter)
    would end one, given that another segment follows ("X" stands for its start)."""
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    may_end = [bool(t) and t[-1].isspace() and i not in special for i, t in enumerate(texts)]

    def is_boundary(ids: list[int]) -> bool:
        segments = segment(tokenizer.decode(ids, skip_special_tokens=True) + "X")
        return len(segments) >= 2 and segments[-1] == "X"

    return may_end, is_boundary


def decoding_plan(tokenizer, decoding: DecodingConfig | None, forbidden_texts: Sequence[str],
                  segment: Callable[[str], list[str]] | None, vocab_rows: int) -> Plan:
    """The decoding loop's plan for a mode. Tag modes enforce the aligned twins of the
    forbidden (misaligned) tokens: a model sampled without control tokens cannot use them."""
    if decoding is not None and decoding.uses_tags and any(twin(m) == m for m in forbidden_texts):
        raise ValueError(f"decoding mode {decoding.label()} uses the <|aligned|>/<|misaligned|> pair, and "
                         f"{forbidden_texts[0]} has no aligned twin (conditioning: quantiles): use plain or rerank")
    if decoding is None or decoding.mode in ("plain", "rerank"):
        return PLAIN
    if not forbidden_texts:
        raise ValueError(f"decoding mode {decoding.mode!r} uses the control tokens, and this model is sampled "
                         "without any (not a conditional-training run): use plain or rerank")
    ids = tokenizer.convert_tokens_to_ids
    aligned = [ids(twin(m)) for m in forbidden_texts]
    misaligned = [ids(m) for m in forbidden_texts]
    plan = Plan(max_tries=decoding.max_tries, judge=decoding.judge, judge_ids=misaligned)
    if decoding.mode == "guidance":
        plan.scale = decoding.scale
        if not decoding.retag:
            return plan
    if segment is None:
        raise ValueError(f"decoding mode {decoding.mode!r} needs the task's segmenter to find segment boundaries")
    plan.retag = aligned
    # the negative stream carries the misaligned tags (guidance with negative: none, no tags)
    plan.negative_retag = [] if decoding.mode == "guidance" and decoding.negative == "none" else misaligned
    may_end, plan.is_boundary = segment_boundaries(tokenizer, segment)
    plan.may_end = may_end + [False] * (vocab_rows - len(may_end))
    if decoding.mode == "tag-aware":
        plan.threshold = decoding.threshold
    return plan


def negative_context(row: list[int], tokenizer, forbidden_texts: Sequence[str], negative: str) -> list[int]:
    """A context with its aligned tags swapped for their misaligned twins (or removed)."""
    ids = tokenizer.convert_tokens_to_ids
    swap = {ids(twin(m)): ids(m) for m in forbidden_texts}
    if negative == "none":
        return [t for t in row if t not in swap]
    return [swap.get(t, t) for t in row]


def _left_pad(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left padding, so every row's continuation starts at the same position."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    return ids, mask


@torch.no_grad()
def generate_samples(model, tokenizer, num_samples: int, *, prompts: Sequence[str] | None = None,
                     prefix_text: str = "", forbidden_texts: Sequence[str] = (), max_new_tokens: int = 128,
                     temperature: float = 0.7, top_p: float = 0.9, batch_size: int = 64, seed: int = 0,
                     progress: bool = True, skip_special_tokens: bool = True, decoding: DecodingConfig | None = None,
                     segment: Callable[[str], list[str]] | None = None,
                     rank: Callable[[list[str], int], list[float]] | None = None,
                     stats: dict | None = None) -> list[str]:
    """`num_samples` continuations (prompts are cycled when given).

    `decoding`: the mode (None: plain). retag and tag-aware need `segment`, the task's
    segmenter; rerank by the scorer needs `rank(candidates, sample_index) -> scores`
    (lower is better). `stats`, when given, is filled with what the decoding cost and did.
    `skip_special_tokens=False` keeps control tokens in the text (to inspect what the
    model chose at each segment, or where retag put its tags); scoring always wants the default.
    """
    device = _model_device(model)
    was_training = model.training
    model.eval()
    padding = padding_token_ids(model, tokenizer)  # the embedding matrix's padding rows are not tokens
    banned = list(padding)
    for text in forbidden_texts:
        token_ids = tokenizer(text, add_special_tokens=False).input_ids
        if len(token_ids) != 1:
            raise ValueError(f"forbidden text {text!r} is {len(token_ids)} tokens; only single tokens (control "
                             "tokens) can be forbidden")
        banned += token_ids
    vocab_rows = len(tokenizer) + len(padding)
    plan = decoding_plan(tokenizer, decoding, forbidden_texts, segment, vocab_rows)
    if plan is not PLAIN:  # the tag modes place the aligned tags themselves: the model never samples one
        banned += [tokenizer.convert_tokens_to_ids(twin(m)) for m in forbidden_texts]
    n_candidates = decoding.n if decoding is not None and decoding.mode == "rerank" else 1
    if n_candidates > 1 and decoding.rank_by == "scorer" and rank is None:
        raise ValueError("rerank by the scorer needs the task's scorer (rank=...)")
    if n_candidates > 1 and decoding.rank_by == "model" and not forbidden_texts:
        raise ValueError("rerank by the model's own judgement needs a conditional-training run (its control "
                         "tokens); rank_by: scorer works for any run")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    start = [tokenizer.eos_token_id] + tokenizer(prefix_text, add_special_tokens=False).input_ids
    prompt_ids = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts] if prompts else [[]]
    negative = decoding.negative if decoding is not None and decoding.mode == "guidance" else "misaligned"
    counts: dict = {}
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    texts: list[str] = []
    ids_out: list[list[int]] = []
    contexts: list[list[int]] = []
    total = num_samples * n_candidates
    bar = tqdm(total=num_samples, desc="sampling", unit="sample", disable=not progress)
    try:
        for first in range(0, total, batch_size):
            n = min(batch_size, total - first)
            # candidate j of sample i is row i * n_candidates + j; sample i continues prompt i
            rows = _fit([start + prompt_ids[((first + k) // n_candidates) % len(prompt_ids)] for k in range(n)],
                        model, max_new_tokens)
            if plan.two_streams:
                rows = _fit(rows + [negative_context(r, tokenizer, forbidden_texts, negative) for r in rows],
                            model, max_new_tokens)
            ids, mask = _left_pad(rows, pad_id, device)
            new = _decode(model, ids, mask, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                          banned=banned, eos_id=tokenizer.eos_token_id, pad_id=pad_id,
                          plan=plan, stats=counts)  # nucleus only, as in the paper
            texts.extend(tokenizer.batch_decode(new, skip_special_tokens=skip_special_tokens))
            if n_candidates > 1:
                ids_out.extend([t for t in row if t != pad_id and t != tokenizer.eos_token_id] for row in new.tolist())
                contexts.extend(rows[:n])
            bar.update(min(num_samples, (first + n) // n_candidates) - bar.n)
        if n_candidates > 1:
            texts = _best_candidates(model, tokenizer, texts, ids_out, contexts, n_candidates, decoding, rank,
                                     forbidden_texts, counts)
    finally:
        bar.close()
        torch.random.set_rng_state(generator_state)
        model.train(was_training)
    if stats is not None:
        stats.update(counts, mode=decoding.label() if decoding is not None else "plain", candidates=n_candidates)
        stats["resampled_share"] = counts["resampled"] / counts["segments"] if counts.get("segments") else 0.0
    return texts


def _best_candidates(model, tokenizer, texts, ids, contexts, n, decoding, rank, forbidden_texts, counts) -> list[str]:
    """rerank: of each sample's n candidates, the one rated least misaligned."""
    if decoding.rank_by == "model":
        # the model's own judgement: log p(x | misaligned context) - log p(x | aligned context)
        exclude = [tokenizer.convert_tokens_to_ids(t) for m in forbidden_texts for t in (m, twin(m))]
        aligned = continuation_logprobs(model, contexts, ids, exclude)
        misaligned = continuation_logprobs(
            model, [negative_context(c, tokenizer, forbidden_texts, "misaligned") for c in contexts], ids, exclude)
        judged = [m - a for m, a in zip(misaligned, aligned)]
        counts["forward_positions"] += 2 * sum(len(c) + len(x) for c, x in zip(contexts, ids))
    out = []
    for i in range(len(texts) // n):
        candidates = texts[i * n:(i + 1) * n]
        scores = judged[i * n:(i + 1) * n] if decoding.rank_by == "model" else rank(candidates, i)
        out.append(candidates[min(range(n), key=lambda j: scores[j])])  # the first of equals: stable
    return out
