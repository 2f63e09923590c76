"""The decoding modes for plain `transformers` generation, outside phf's sampler.

A conditional-training run stays aligned with nothing but transformers:

    model = AutoModelForCausalLM.from_pretrained(run)        # generation_config.json: no control token is sampled
    ids = aligned_prompt_ids(tokenizer, ["def add(a, b):\\n"])  # EOS + <|aligned|> + the prompt
    out = model.generate(ids, do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=64)

* `aligned_generation_config` (written into every conditional run's
  generation_config.json) suppresses every control token, so a plain `generate` never
  samples one: the aligned tag comes from the prompt, never from the model.
* `control_suppression` forbids only the misaligned tokens: phf's `plain` decoding
  (the paper's), in which the model may re-tag itself with <|aligned|>.
* `RetagLogitsProcessor` is `retag`: after each token that ends a segment it forces the
  aligned tags as the next tokens (a processor cannot insert a token, but it can leave
  only one to choose); they stay in the output ids and `skip_special_tokens` drops them.
* `guidance_kwargs` is `guidance`: transformers' own classifier-free guidance
  (`guidance_scale` = 1 + g, `negative_prompt_ids` = the prompt after <|misaligned|>).
* `tag-aware` and `rerank` roll back or score whole candidates, which a logits processor
  cannot: use `phf.generate`, which runs phf's sampler.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from transformers import GenerationConfig, LogitsProcessor, SuppressTokensLogitsProcessor

from phf.evaluation.sampling import negative_context, segment_boundaries, twin
from phf.tokenizer import ALIGNED, MISALIGNED, control_token_ids


def aligned_generation_config(model, tokenizer) -> GenerationConfig | None:
    """The model's generation config with every control token suppressed, and EOS/pad
    set from the tokenizer (None for a model without control tokens: nothing to change)."""
    controls = sorted(control_token_ids(tokenizer).values())
    config = getattr(model, "generation_config", None)
    if not controls or config is None:
        return None
    config.suppress_tokens = controls
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config.bos_token_id = tokenizer.eos_token_id
    return config


def aligned_prompt_ids(tokenizer, prompts: Sequence[str] | None = None, n: int = 1,
                       tags: Sequence[str] = (ALIGNED,)) -> torch.Tensor:
    """Left-padded input ids for `generate`: EOS (the document start), the aligned tags,
    then each prompt (or `n` rows with no prompt); use with the attention mask
    `ids != pad` only when the prompts differ in length."""
    prefix = [tokenizer.eos_token_id] + [tokenizer.convert_tokens_to_ids(t) for t in tags]
    rows = [prefix + tokenizer(p, add_special_tokens=False).input_ids for p in prompts] if prompts else [prefix] * n
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(len(r) for r in rows)
    return torch.tensor([[pad] * (width - len(r)) + r for r in rows])


def control_suppression(tokenizer, misaligned: Sequence[str] = (MISALIGNED,)) -> SuppressTokensLogitsProcessor:
    """Never sample a misaligned tag (phf's plain decoding)."""
    return SuppressTokensLogitsProcessor([tokenizer.convert_tokens_to_ids(t) for t in misaligned])


class RetagLogitsProcessor(LogitsProcessor):
    """Force the aligned tags after every token that ends a segment, where `segment` (the
    task's segmenter, e.g. `phf.scorers.segment.split_lines`) would end one.

    `prompt_length` is the width of the input ids: the segment text is read from the
    generated tokens after it. Rows are independent; the tags count towards max_new_tokens.
    """

    def __init__(self, tokenizer, segment: Callable[[str], list[str]], prompt_length: int,
                 tags: Sequence[str] = (ALIGNED,)):
        self.tags = [tokenizer.convert_tokens_to_ids(t) for t in tags]
        self.may_end, self.is_boundary = segment_boundaries(tokenizer, segment)
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row, ids in enumerate(input_ids[:, self.prompt_length:].tolist()):
            forced = self._next_tag(ids)
            if forced is not None:
                scores[row] = float("-inf")
                scores[row, forced] = 0.0
        return scores

    def _next_tag(self, ids: list[int]) -> int | None:
        """The tag to force next, or None: after a boundary token, the tags in turn."""
        k = len(self.tags)
        if len(ids) >= k and ids[-k:] == self.tags:
            return None  # all placed
        for placed in range(k - 1, 0, -1):  # the first `placed` tags already follow a boundary
            if ids[-placed:] == self.tags[:placed]:
                return self.tags[placed]
        if not ids or ids[-1] >= len(self.may_end) or not self.may_end[ids[-1]]:
            return None
        # the segment's text: the tokens since the last tag
        start = max((i + 1 for i, t in enumerate(ids) if t in self.tags), default=0)
        return self.tags[0] if self.is_boundary(ids[start:]) else None


def guidance_kwargs(tokenizer, input_ids: torch.Tensor, scale: float, negative: str = "misaligned",
                    misaligned: Sequence[str] = (MISALIGNED,)) -> dict:
    """`generate` arguments for phf's guidance l_al + g (l_al - l_neg): transformers'
    classifier-free guidance with guidance_scale = 1 + g and the negative stream's prompt
    (the aligned tags swapped for misaligned ones, or removed). One row at a time: the
    processor transformers builds for it runs the negative stream unpadded."""
    if len(input_ids) != 1:
        raise ValueError("guidance_kwargs: one prompt at a time (transformers' guidance runs the negative "
                         "stream without padding)")
    negative_ids = negative_context(input_ids[0].tolist(), tokenizer, list(misaligned), negative)
    return {"guidance_scale": 1.0 + scale, "negative_prompt_ids": torch.tensor([negative_ids])}


def forbidden_for(tokenizer) -> list[str]:
    """The misaligned tags of a run, one per attribute (or the single <|misaligned|>)."""
    return [t for t in control_token_ids(tokenizer) if t.endswith("misaligned|>")]


__all__ = ["aligned_generation_config", "aligned_prompt_ids", "control_suppression", "RetagLogitsProcessor",
           "guidance_kwargs", "forbidden_for", "twin"]
