"""Sampling from a model for evaluation, with the conditional-training controls.

Generation starts from EOS (the document separator, as for GPT-2), then an optional
`prefix_text` (the <|aligned|> token for conditional runs), then the prompt if any.
`forbidden_texts` become `bad_words_ids` (a conditional model must never emit
<|misaligned|>). Special tokens, control tokens included, are stripped from the
returned continuations before anyone scores them.
"""

from __future__ import annotations

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
    bad_words = [tokenizer(t, add_special_tokens=False).input_ids for t in forbidden_texts]
    bad_words = [ids for ids in bad_words if ids] or None
    # the embedding matrix's padding rows (phf.model.padded_vocab_size) are not tokens
    suppress = padding_token_ids(model, tokenizer) or None
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
            gen = model.generate(
                input_ids=ids, attention_mask=mask, do_sample=True, temperature=temperature, top_p=top_p, top_k=0,  # nucleus only, as in the paper
                max_new_tokens=max_new_tokens, bad_words_ids=bad_words, suppress_tokens=suppress, pad_token_id=pad_id,
                eos_token_id=tokenizer.eos_token_id)
            out.extend(tokenizer.batch_decode(gen[:, width:], skip_special_tokens=skip_special_tokens))
            bar.update(n)
    finally:
        bar.close()
        torch.random.set_rng_state(generator_state)
        model.train(was_training)
    return out
