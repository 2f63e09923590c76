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

Every forward is one token per row: after a boundary the tags are the row's next
tokens, forced rather than sampled, so a step where a few rows end a line no longer
widens the forward and the cache for every row. The cache grows in place (no copy of it
per step), and rows that have ended leave the batch once a quarter of it has. With no
plan, the loop does exactly what the plain sampler always did (same operations, same
random draws).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers.cache_utils import DynamicLayer

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


class _GrowingLayer(DynamicLayer):
    """A cache layer whose keys and values live in a buffer with room to grow: a step's
    column is written in place, where DynamicLayer copies the whole cache (torch.cat),
    which was half of a tag step's time at 64-128 rows and a few hundred columns."""

    def __init__(self, layer: DynamicLayer, room: int):
        super().__init__()
        self.device, self.is_initialized, self.length = layer.keys.device, True, layer.keys.shape[-2]
        self._k, self._v = (self._buffer(t, self.length + room) for t in (layer.keys, layer.values))
        self._views()

    def _buffer(self, t: torch.Tensor, columns: int) -> torch.Tensor:
        buffer = t.new_empty((*t.shape[:-2], columns, t.shape[-1]))
        buffer[..., :t.shape[-2], :] = t
        return buffer

    def _views(self) -> None:
        self.keys, self.values = self._k[..., :self.length, :], self._v[..., :self.length, :]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        end = self.length + key_states.shape[-2]
        if end > self._k.shape[-2]:  # full: twice the room
            self._k, self._v = (self._buffer(t, 2 * end) for t in (self.keys, self.values))
        self._k[..., self.length:end, :] = key_states
        self._v[..., self.length:end, :] = value_states
        self.length = end
        self._views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._k, self._v = self._k[indices], self._v[indices]
        self._views()


def _growing(cache, room: int):
    """The cache with its plain DynamicLayers in growing buffers (other layer kinds as they are)."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        for i, layer in enumerate(layers):
            if type(layer) is DynamicLayer and layer.is_initialized:
                layers[i] = _GrowingLayer(layer, room)
    return cache


class _TagLoop:
    """The loop with segment boundaries (retag, tag-aware) and/or a second stream.

    Every forward is one token wide: after a boundary a row's next steps feed its tags
    as forced tokens (nothing is sampled for it there), at the positions and cache columns
    they would take in one wide forward, so the model sees the same context. Per main row
    it keeps the tokens, where the current segment starts (in the output, in the cache's
    columns, in positions) and the scores at that start, so that a rejected segment can be
    masked out and sampled again. A row that has ended leaves the batch and the KV cache:
    the rows still running (tag-aware's slowest, which resampled most) go on alone."""

    def __init__(self, model, plan: Plan, logits, mask, next_pos, out, bias, cache_arg, extra, counts, n, *,
                 max_new_tokens, temperature, top_p, eos_id, pad_id):
        self.model, self.plan, self.bias, self.cache_arg, self.extra, self.counts = \
            model, plan, bias, cache_arg, extra, counts
        self.n, self.max_new_tokens, self.temperature, self.top_p = n, max_new_tokens, temperature, top_p
        self.eos_id, self.pad_id = eos_id, pad_id
        config = model.config
        self.limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None) or 1 << 30
        self.logits, self.mask = logits, mask
        self.cache = _growing(out[cache_arg], max_new_tokens * 2)
        self.next_pos = next_pos.tolist()  # per batch row: the position of the token fed next
        self.live = list(range(n))         # the main rows in the batch, in order (their negative twins follow)
        self.ended: set[int] = set()       # main rows that ended but are still in the batch
        self.tokens: list[list[int]] = [[] for _ in range(n)]   # accepted and current-segment tokens
        self.content = [0] * n                                    # of which sampled (not inserted tags)
        width = mask.shape[1]
        self.seg_out = [0] * n             # len(tokens) at the segment's start
        self.seg_content = [0] * n
        self.seg_col = [width] * n         # first cache column of the segment
        self.seg_pos = list(self.next_pos)  # position ids at the segment's start (batch rows)
        self.seg_logits = logits.clone()   # scores at the segment's start (batch rows)
        self.seg_lp = torch.zeros(len(logits), device=logits.device)  # segment log-prob per batch row
        self.tries = [0] * n
        #: in a tag phase (after a boundary): the slot fed last, 0 the boundary token, k tag k-1
        self.slot: list[int | None] = [None] * n
        self.p_aligned = [1.0] * n         # next-tag judge: P(no misaligned tag) so far
        self.n_tags = max(len(plan.retag), len(plan.negative_retag))

    def _rows(self, i: int) -> list[int]:
        """The batch rows of the main row at batch index i: itself, and its negative twin."""
        return [i, i + len(self.live)] if self.plan.two_streams else [i]

    def run(self) -> torch.Tensor:
        plan = self.plan
        ratio = plan.threshold is not None and plan.judge == "ratio"
        cap = self.max_new_tokens * (1 + self.n_tags) * (plan.max_tries + 1 if plan.threshold is not None else 1)
        for _ in range(cap):
            b = len(self.live)
            # the rows that sample this step: not feeding tags, not ended
            need = [i for i, r in enumerate(self.live) if self.slot[r] is None and r not in self.ended]
            token = dict(zip(need, self._sample(need, ratio))) if need else {}
            judged = None
            rows = len(self.logits)
            feed, valid = [self.pad_id] * rows, [0] * rows
            for i, r in enumerate(self.live):
                if r in self.ended:
                    continue
                if i not in token:  # the row's next tag (and its twin's): fed, not sampled
                    k = self.slot[r]
                    self.slot[r] = k + 1
                    if k < len(plan.retag):
                        feed[i], valid[i] = plan.retag[k], 1
                        self.tokens[r].append(plan.retag[k])  # kept for inspection; stripped from the text
                    if plan.two_streams and k < len(plan.negative_retag):
                        feed[i + b], valid[i + b] = plan.negative_retag[k], 1
                    continue
                t = token[i]
                self.tokens[r].append(t)
                self.content[r] += 1
                self.counts["sampled_tokens"] += 1
                # a row stops where its next token and tags would pass the model's last position
                if t == self.eos_id or self.content[r] >= self.max_new_tokens or \
                        self.next_pos[i] + 1 + len(plan.retag) >= self.limit:
                    self.ended.add(r)
                    continue
                for row in self._rows(i):
                    feed[row], valid[row] = t, 1
                if plan.at_boundaries and plan.may_end[t] and plan.is_boundary(self.tokens[r][self.seg_out[r]:]):
                    self.counts["segments"] += 1
                    if ratio and self.tries[r] < plan.max_tries:
                        # the ratio judge needs no forward: a rejected segment's boundary is never fed
                        if judged is None:
                            judged = torch.sigmoid(self.seg_lp[b:] - self.seg_lp[:b]).tolist()
                        if judged[i] > plan.threshold:
                            for row in self._rows(i):
                                feed[row], valid[row] = self.pad_id, 0
                            self._roll_back(i, r)
                            continue
                    self.slot[r], self.p_aligned[r] = 0, 1.0
            if len(self.ended) == b:
                break
            # ended rows ride along masked until a quarter of the batch has ended: a compaction
            # copies the whole cache, about as much as a step reads
            if len(self.ended) >= max(1, b // 4):
                feed, valid = self._drop(feed, valid)
            self._forward(feed, valid)
            self._after_forward()
        return self._result()

    def _sample(self, need: list[int], ratio: bool) -> list[int]:
        """Tokens for the batch rows `need` (and, for the ratio judge, each stream's
        log-prob of them added to its segment's)."""
        b = len(self.live)
        index = None
        logits = self.logits
        if len(need) < b:
            index = torch.tensor(need + [i + b for i in need] if self.plan.two_streams else need,
                                 device=logits.device)
            logits = logits[index]
        scores = _mixed_scores(logits, len(need), self.plan.scale)
        token = nucleus_sample(scores / self.temperature + self.bias, self.top_p)
        if ratio:
            lp = torch.log_softmax(logits.float(), dim=-1).gather(1, torch.cat([token, token])[:, None]).squeeze(1)
            if index is None:
                self.seg_lp += lp
            else:
                self.seg_lp.index_add_(0, index, lp)
        return token.tolist()

    def _forward(self, feed: list[int], valid: list[int]) -> None:
        """One token per batch row (masked padding where a row feeds nothing)."""
        device = self.mask.device
        valid_t = torch.tensor(valid, dtype=self.mask.dtype, device=device)
        self.mask = torch.cat([self.mask, valid_t[:, None]], dim=1)
        positions = torch.tensor(self.next_pos, device=device)[:, None]
        self.next_pos = [p + v for p, v in zip(self.next_pos, valid)]
        self.counts["forward_positions"] += sum(valid)
        out = self.model(input_ids=torch.tensor(feed, device=device)[:, None], attention_mask=self.mask,
                         position_ids=positions, use_cache=True, **{self.cache_arg: self.cache}, **self.extra)
        self.cache = out[self.cache_arg]
        # a row that fed nothing keeps the scores of its last real token
        self.logits = torch.where(valid_t.bool()[:, None], out.logits[:, -1, :], self.logits)

    def _after_forward(self) -> None:
        """Judge (next-tag) and end the segments of the rows in a tag phase."""
        plan = self.plan
        phase = [(i, r, self.slot[r]) for i, r in enumerate(self.live) if self.slot[r] is not None]
        if not phase:
            return
        judging = plan.threshold is not None and plan.judge == "next-tag"
        if judging:
            # P(misaligned tag k) read where the model would place tag k: after slot k
            reads = [(i, r, plan.judge_ids[s]) for i, r, s in phase
                     if s < len(plan.judge_ids) and self.tries[r] < plan.max_tries]
            if reads:
                index = torch.tensor([i for i, _, _ in reads], device=self.logits.device)
                mis = torch.tensor([m for _, _, m in reads], device=self.logits.device)
                probs = torch.softmax(self.logits[index].float(), dim=-1)[torch.arange(len(reads)), mis].tolist()
                for (_, r, _), p in zip(reads, probs):
                    self.p_aligned[r] *= 1.0 - p
        last_read = max(len(plan.judge_ids), 1) - 1
        accepted = []
        for i, r, s in phase:
            if judging and s == last_read and self.tries[r] < plan.max_tries and \
                    1.0 - self.p_aligned[r] > plan.threshold:
                self._roll_back(i, r)
            elif s == self.n_tags:
                accepted.append(i)
        if accepted:
            self._accept(accepted)

    def _roll_back(self, i: int, r: int) -> None:
        """Mask out the segment of main row r (batch index i) and restart it from its start."""
        self.counts["resampled"] += 1
        self.tries[r] += 1
        self.counts["most_tries"] = max(self.counts["most_tries"], self.tries[r])
        for row in self._rows(i):
            self.mask[row, self.seg_col[r]:] = 0
            self.next_pos[row] = self.seg_pos[row]
            self.logits[row] = self.seg_logits[row]
            self.seg_lp[row] = 0.0
        del self.tokens[r][self.seg_out[r]:]
        self.content[r] = self.seg_content[r]
        self.slot[r] = None

    def _accept(self, batch_index: list[int]) -> None:
        """The segments (with their tags) are kept: the next ones start here."""
        rows = []
        for i in batch_index:
            r = self.live[i]
            self.tries[r], self.slot[r] = 0, None
            self.seg_out[r], self.seg_content[r], self.seg_col[r] = len(self.tokens[r]), self.content[r], \
                self.mask.shape[1]
            for row in self._rows(i):
                self.seg_pos[row] = self.next_pos[row]
                rows.append(row)
        index = torch.tensor(rows, device=self.logits.device)
        self.seg_logits[index] = self.logits[index]
        self.seg_lp[index] = 0.0

    def _drop(self, feed: list[int], valid: list[int]) -> tuple[list[int], list[int]]:
        """Take the rows that ended out of the batch, the KV cache included."""
        keep = [i for i, r in enumerate(self.live) if r not in self.ended]
        index = keep + [i + len(self.live) for i in keep] if self.plan.two_streams else keep
        self.live = [self.live[i] for i in keep]
        self.ended = set()
        index_t = torch.tensor(index, device=self.mask.device)
        self.cache.batch_select_indices(index_t)
        self.mask, self.logits = self.mask[index_t], self.logits[index_t]
        self.seg_logits, self.seg_lp = self.seg_logits[index_t], self.seg_lp[index_t]
        self.next_pos = [self.next_pos[i] for i in index]
        self.seg_pos = [self.seg_pos[i] for i in index]
        return [feed[i] for i in index], [valid[i] for i in index]

    def _result(self) -> torch.Tensor:
        width = max(len(t) for t in self.tokens) or 1
        return torch.tensor([t + [self.pad_id] * (width - len(t)) for t in self.tokens], dtype=torch.long,
                            device=self.mask.device)
