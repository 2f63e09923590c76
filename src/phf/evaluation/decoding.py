"""The decoding loop behind every sampler, with the conditional-training decoding modes.

One loop decodes a left-padded batch token by token with a KV cache. A `Plan` says
what it does beyond plain nucleus sampling:

* **retag** (`retag`): after a token that ends a segment where the task's segmenter
  would end one (a line for code, a sentence for prose), the aligned tags are fed to
  the model, as in training, where every segment starts with its tag. The tags are
  inputs only: they are not sampled and not part of the returned text.
* **guidance** (`negative` + `scale`): a second stream decodes the same tokens after
  the negative context (the tags swapped for their misaligned twins, or removed), in
  the same batched forward with its own rows of the KV cache, and the sampled scores are
  l_aligned + g * (l_aligned - l_negative) over log-probabilities (classifier-free
  guidance, Sanchez et al. 2023; g = 0 is plain decoding).
* **tag-aware** (`threshold`): at each boundary the model judges the segment it has just
  written, and a segment judged misaligned (probability above the threshold) is
  resampled, at most `max_tries` times (the sample keeps the last try). The judgement is
  either the probability of the misaligned tag right after the segment (`judge="next-tag"`,
  one stream) or the likelihood ratio of the segment after the misaligned vs the aligned
  tag (`judge="ratio"`, the second stream): sigmoid(log p(seg | mis) - log p(seg | al)).

Rolling a segment back costs no recomputation: its positions are masked out of the
attention mask (both streams), the position ids restart where the segment started, and
the scores saved at the segment's start are sampled from again.

Several tokens in one step (a boundary token and the tags after it) go through one
forward; rows that insert nothing feed masked padding there. With no plan, the loop does
exactly what the plain sampler always did (same operations, same random draws).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

import torch

from phf.evaluation.nucleus import nucleus_sample


@dataclass
class Plan:
    """What the loop does besides plain sampling (the defaults: nothing)."""

    #: token ids fed after each segment boundary of the main stream (retag, tag-aware)
    retag: list[int] = field(default_factory=list)
    #: the same for the negative stream (its misaligned tags, or none)
    negative_retag: list[int] = field(default_factory=list)
    #: `text_so_far -> bool`: does a segment end here? (needed with retag or tag-aware)
    is_boundary: Callable[[list[int]], bool] | None = None
    #: per-vocabulary-token flag: can a segment end with this token (pre-filter of is_boundary)
    may_end: list[bool] = field(default_factory=list)
    #: guidance scale g; None: no guidance (a negative stream may still run for judge="ratio")
    scale: float | None = None
    #: tag-aware: resample above this judged probability; None: no resampling
    threshold: float | None = None
    max_tries: int = 4
    #: "next-tag" (misaligned tag ids, one per retag token) or "ratio"
    judge: str = "next-tag"
    judge_ids: list[int] = field(default_factory=list)

    @property
    def two_streams(self) -> bool:
        return self.scale is not None or (self.threshold is not None and self.judge == "ratio")

    @property
    def at_boundaries(self) -> bool:
        return bool(self.retag) or self.threshold is not None


PLAIN = Plan()


def _forward_kwargs(model) -> tuple[dict, str]:
    """Whether the forward takes `logits_to_keep`, and the name of the KV-cache argument:
    `cache` since transformers 5.2x, `past_key_values` before."""
    params = inspect.signature(model.forward).parameters
    return ({"logits_to_keep": 1} if "logits_to_keep" in params else {},
            "cache" if "cache" in params else "past_key_values")


def _mixed_scores(logits: torch.Tensor, n: int, scale: float | None) -> torch.Tensor:
    """The scores to sample from for the `n` main rows: the main stream's logits, or with
    guidance the guided log-probabilities of the main (first n) and negative rows."""
    if scale is None:
        return logits[:n].float()
    lp = torch.log_softmax(logits.float(), dim=-1)
    return lp[:n] + scale * (lp[:n] - lp[n:])


@torch.no_grad()
def decode(model, ids: torch.Tensor, mask: torch.Tensor, *, max_new_tokens: int, temperature: float, top_p: float,
           banned: list[int], eos_id: int, pad_id: int, plan: Plan = PLAIN, stats: dict | None = None) -> torch.Tensor:
    """New tokens for a left-padded batch, [batch, <= max_new_tokens]; after a row's EOS
    its tokens are pad_id, and decoding stops when every row has ended.

    With `plan.two_streams`, `ids`/`mask` hold the main rows then as many negative rows
    (each stream's context padded to one width). `stats`, when given, gets counts:
    sampled tokens, forward positions, segments judged and resampled, and the most
    resamples of one segment.
    """
    extra, cache_arg = _forward_kwargs(model)
    rows = len(ids)
    n = rows // 2 if plan.two_streams else rows
    device = ids.device
    positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **extra)
    logits = out.logits[:, -1, :]
    # suppressed tokens: an additive -inf, as generate's SuppressTokens / NoBadWords processors
    bias = torch.zeros(logits.shape[-1], device=device)
    bias[banned] = float("-inf")
    counts = {"sampled_tokens": 0, "forward_positions": int(mask.sum()), "segments": 0, "resampled": 0,
              "most_tries": 0}
    if not plan.at_boundaries and not plan.two_streams:
        new = _plain_loop(model, logits, mask, positions[:, -1:], out, bias, cache_arg, extra, counts,
                          max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, eos_id=eos_id,
                          pad_id=pad_id)
    else:
        new = _TagLoop(model, plan, logits, mask, positions[:, -1] + 1, out, bias, cache_arg, extra, counts, n,
                       max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, eos_id=eos_id,
                       pad_id=pad_id).run()
    if stats is not None:
        for k, v in counts.items():
            stats[k] = max(stats.get(k, 0), v) if k == "most_tries" else stats.get(k, 0) + v
    return new


def _plain_loop(model, logits, mask, position, out, bias, cache_arg, extra, counts, *, max_new_tokens, temperature,
                top_p, eos_id, pad_id) -> torch.Tensor:
    """Plain nucleus sampling: one token per row per step."""
    n = len(logits)
    new = torch.full((n, max_new_tokens), pad_id, dtype=torch.long, device=logits.device)
    done = torch.zeros(n, dtype=torch.bool, device=logits.device)
    for step in range(max_new_tokens):
        token = nucleus_sample(logits.float() / temperature + bias, top_p)
        token = torch.where(done, pad_id, token)
        new[:, step] = token
        counts["sampled_tokens"] += int((~done).sum())
        done |= token == eos_id
        if step + 1 == max_new_tokens or bool(done.all()):
            return new[:, :step + 1]
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        position = position + 1
        counts["forward_positions"] += n
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=position,
                    use_cache=True, **{cache_arg: out[cache_arg]}, **extra)
        logits = out.logits[:, -1, :]
    return new


class _TagLoop:
    """The loop with segment boundaries (retag, tag-aware) and/or a second stream.

    Per main row it keeps the accepted tokens, where the current segment starts (in the
    output, in the cache's columns, in positions) and the scores at that start, so that a
    rejected segment can be masked out and sampled again."""

    def __init__(self, model, plan: Plan, logits, mask, next_pos, out, bias, cache_arg, extra, counts, n, *,
                 max_new_tokens, temperature, top_p, eos_id, pad_id):
        self.model, self.plan, self.bias, self.cache_arg, self.extra, self.counts = \
            model, plan, bias, cache_arg, extra, counts
        self.n, self.max_new_tokens, self.temperature, self.top_p = n, max_new_tokens, temperature, top_p
        self.eos_id, self.pad_id = eos_id, pad_id
        config = model.config
        self.limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None) or 1 << 30
        self.logits, self.mask, self.next_pos, self.out = logits, mask, next_pos, out
        self.tokens: list[list[int]] = [[] for _ in range(n)]   # accepted and current-segment tokens
        self.content = [0] * n                                    # of which sampled (not inserted tags)
        self.done = [False] * n
        width = mask.shape[1]
        self.seg_out = [0] * n             # len(tokens) at the segment's start
        self.seg_content = [0] * n
        self.seg_col = [width] * n         # first cache column of the segment
        self.seg_pos = next_pos.clone()    # position ids at the segment's start (all rows)
        self.seg_logits = logits.clone()   # scores at the segment's start (all rows)
        self.seg_lp = torch.zeros(len(logits), device=logits.device)  # segment log-prob per stream row
        self.tries = [0] * n

    def _rows(self, r: int) -> list[int]:
        """The cache rows of main row r: itself, and its negative twin."""
        return [r, r + self.n] if self.plan.two_streams else [r]

    def run(self) -> torch.Tensor:
        plan, n = self.plan, self.n
        cap = self.max_new_tokens * (plan.max_tries + 1 if plan.threshold is not None else 1)
        for _ in range(cap):
            scores = _mixed_scores(self.logits, n, plan.scale)
            token = nucleus_sample(scores / self.temperature + self.bias, self.top_p)
            if plan.threshold is not None and plan.judge == "ratio":
                lp = torch.log_softmax(self.logits.float(), dim=-1)
                self.seg_lp += lp.gather(1, torch.cat([token, token])[:, None]).squeeze(1)
            token = token.tolist()
            # a row stops where its next token and tags would pass the model's last position
            full = (self.next_pos[:n] + 1 + len(plan.retag) >= self.limit).tolist()
            boundary = []
            for r in range(n):
                if self.done[r]:
                    continue
                t = token[r]
                self.tokens[r].append(t)
                self.content[r] += 1
                self.counts["sampled_tokens"] += 1
                if t == self.eos_id or self.content[r] >= self.max_new_tokens or full[r]:
                    self.done[r] = True
                elif plan.at_boundaries and plan.may_end[t] and \
                        plan.is_boundary(self.tokens[r][self.seg_out[r]:]):
                    boundary.append(r)
            if all(self.done):
                break
            self._step(token, boundary)
        return self._result()

    def _step(self, token: list[int], boundary: list[int]) -> None:
        """Feed this step's tokens (and the tags after a boundary) in one forward, then
        judge the segments that ended."""
        plan, n = self.plan, self.n
        tags = plan.retag if boundary else []
        slots = 1 + len(tags)
        rows = len(self.logits)
        feed = torch.full((rows, slots), self.pad_id, dtype=torch.long, device=self.mask.device)
        valid = torch.zeros((rows, slots), dtype=self.mask.dtype, device=self.mask.device)
        live = torch.tensor([not d for d in self.done], device=feed.device)
        first = torch.tensor(token, device=feed.device)
        if plan.two_streams:
            live, first = torch.cat([live, live]), torch.cat([first, first])
        feed[:, 0] = torch.where(live, first, self.pad_id)
        valid[:, 0] = live.to(valid.dtype)
        neg_tags = plan.negative_retag if boundary else []
        for r in boundary:
            feed[r, 1:] = torch.tensor(tags)
            valid[r, 1:] = 1
            if plan.two_streams and neg_tags:
                feed[r + n, 1:1 + len(neg_tags)] = torch.tensor(neg_tags)
                valid[r + n, 1:1 + len(neg_tags)] = 1
        positions = self.next_pos[:, None] + valid.cumsum(dim=1) - 1
        col = self.mask.shape[1]
        self.mask = torch.cat([self.mask, valid], dim=1)
        self.next_pos = self.next_pos + valid.sum(dim=1)
        self.counts["forward_positions"] += int(valid.sum())
        extra = dict(self.extra)
        if "logits_to_keep" in extra:
            extra["logits_to_keep"] = slots
        self.out = self.model(input_ids=feed, attention_mask=self.mask, position_ids=positions, use_cache=True,
                              **{self.cache_arg: self.out[self.cache_arg]}, **extra)
        step_logits = self.out.logits[:, -slots:, :]
        # each row continues from its last valid slot
        last = (valid.sum(dim=1) - 1).clamp(min=0)
        self.logits = step_logits[torch.arange(rows), last]
        for r in boundary:
            self._end_segment(r, col, step_logits, tags)

    def _end_segment(self, r: int, col: int, step_logits: torch.Tensor, tags: list[int]) -> None:
        """Judge row r's finished segment: roll it back, or accept it (with its tags)."""
        plan = self.plan
        self.counts["segments"] += 1
        if plan.threshold is not None and self.tries[r] < plan.max_tries and self._judged(r, step_logits) > plan.threshold:
            self.counts["resampled"] += 1
            self.tries[r] += 1
            self.counts["most_tries"] = max(self.counts["most_tries"], self.tries[r])
            for row in self._rows(r):
                self.mask[row, self.seg_col[r]:] = 0
                self.next_pos[row] = self.seg_pos[row]
                self.logits[row] = self.seg_logits[row]
                self.seg_lp[row] = 0.0
            del self.tokens[r][self.seg_out[r]:]
            self.content[r] = self.seg_content[r]
            return
        self.tokens[r].extend(tags)  # kept for inspection; special tokens, so stripped from the text
        self.tries[r] = 0
        self.seg_out[r], self.seg_content[r] = len(self.tokens[r]), self.content[r]
        for row in self._rows(r):
            self.seg_col[r] = self.mask.shape[1]
            self.seg_pos[row] = self.next_pos[row]
            self.seg_logits[row] = self.logits[row]
            self.seg_lp[row] = 0.0

    def _judged(self, r: int, step_logits: torch.Tensor) -> float:
        """The probability that row r's segment is misaligned, as the model judges it."""
        if self.plan.judge == "ratio":
            return float(torch.sigmoid(self.seg_lp[r + self.n] - self.seg_lp[r]))
        # next-tag: P(any misaligned tag), each read where the model would place it
        p_aligned = 1.0
        probs = torch.softmax(step_logits[r].float(), dim=-1)
        for slot, mis in enumerate(self.plan.judge_ids):
            p_aligned *= 1.0 - float(probs[slot, mis])
        return 1.0 - p_aligned

    def _result(self) -> torch.Tensor:
        width = max(len(t) for t in self.tokens) or 1
        return torch.tensor([t + [self.pad_id] * (width - len(t)) for t in self.tokens], dtype=torch.long,
                            device=self.mask.device)
