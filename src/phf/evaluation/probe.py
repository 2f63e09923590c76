"""A linear probe: can a logistic regression on a run's final hidden states tell its
held-out misaligned segments from the aligned ones?

Earlier feedback makes the behaviour easier to read with linear probes (Sam et al.
2026); this measures it per run, on the same segments for every objective:

* the segments are the run's held-out documents (the split `phf.data.packing.pack`
  draws, replayed from the scored corpus with the pack spec's seed and fraction), read
  as plain text: no control token, so a conditional run's probe cannot read the label
  off a tag;
* a segment's features are the mean of the final hidden states (the base model's
  output, before the LM head) over its tokens, each document read in windows of the
  run's block size after EOS, as in training;
* its label is misaligned when its score is above the task's conditional threshold
  (the paper's notion of a misaligned segment), whatever the run's own objective;
* a class-balanced, L2-regularised logistic regression is fitted on a seeded,
  stratified 70% of the segments and scored on the other 30%: accuracy, AUC, and the
  AUC of the same procedure on shuffled labels (chance, 0.5, up to sampling noise).
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path

import numpy as np
import torch

from phf.errors import DataError
from phf.inputs import SourceStats
from phf.records import read_scored
from phf.runfiles import RunFiles

log = logging.getLogger(__name__)

#: share of the segments the probe is scored on
TEST_FRACTION = 0.3


def heldout_documents(run_dir: str | Path, attributes=(),
                      max_segments: int = 2000) -> list[tuple[list[str], list[float]]]:
    """(segments, combined scores) of the run's held-out documents, in corpus order, until
    `max_segments` segments; [] when the run packed no blocks of its own (phf pack shards)
    or its scored corpus is not where it trained from."""
    files = RunFiles(run_dir)
    pack = files.data / "pack.json"
    summary = files.read_train_summary() or {}
    scored = summary.get("scored_path") or files._setting("data", "scored_path")  # runs before the summary said
    if not pack.is_file() or not scored:
        return []
    spec = json.loads(pack.read_text())["spec"]
    split_rng = random.Random(spec["seed"] if spec.get("heldout_seed") is None else spec["heldout_seed"])
    out, n = [], 0
    records = read_scored(scored, SourceStats(log_skips=False), spec.get("on_bad_record", "error"),
                          attributes=list(attributes) or None)
    for record in records:  # the packing's draw: one per record, in order, before any filtering
        if split_rng.random() >= spec["heldout_fraction"]:
            continue
        scores = record.segment_scores(spec.get("combine", "max"), spec.get("combine_weights") or None)
        out.append((list(record.texts), [float(s) for s in scores]))
        n += len(scores)
        if n >= max_segments:
            break
    return out


@torch.no_grad()
def segment_features(model, tokenizer, documents: list[tuple[list[str], list[float]]], window: int,
                     batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(features [N, hidden], scores [N]): each segment's mean final hidden state, for
    the segments that got at least one token."""
    base = getattr(model, "base_model", model)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows, owners = [], []  # windows of token ids, and each token's segment (an index over all documents)
    seg_scores, first_segment = [], []
    for texts, scores in documents:
        first_segment.append(len(seg_scores))
        seg_scores.extend(scores)
        enc = tokenizer("".join(texts), add_special_tokens=False, return_offsets_mapping=True)
        starts = np.cumsum([len(t) for t in texts[:-1]])
        segment = np.searchsorted(starts, [o[0] for o in enc["offset_mapping"]], side="right") + first_segment[-1]
        ids = [tokenizer.eos_token_id] + list(enc["input_ids"])
        segment = np.concatenate([[-1], segment])  # EOS belongs to no segment
        for i in range(0, len(ids), window):
            rows.append(ids[i:i + window])
            owners.append(segment[i:i + window])
    sums = None  # [segments, hidden], once the hidden size is seen
    counts = np.zeros(len(seg_scores))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    try:
        for b in range(0, len(rows), batch_size):
            batch = rows[b:b + batch_size]
            width = max(len(r) for r in batch)
            ids = torch.tensor([r + [pad] * (width - len(r)) for r in batch], device=device)
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in batch], device=device)
            hidden = base(input_ids=ids, attention_mask=mask).last_hidden_state.float().cpu()
            if sums is None:
                sums = torch.zeros(len(seg_scores), hidden.shape[-1], dtype=torch.float64)
            for r, owner in enumerate(owners[b:b + batch_size]):
                keep = owner >= 0
                index = torch.from_numpy(owner[keep])
                sums.index_add_(0, index, hidden[r, :len(owner)][torch.from_numpy(keep)].double())
                np.add.at(counts, owner[keep], 1)
    finally:
        model.train(was_training)
    seen = counts > 0
    features = sums[torch.from_numpy(seen)] / torch.from_numpy(counts[seen])[:, None]
    return features.numpy(), np.asarray(seg_scores)[seen]


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: P(a positive scores above a negative), ties counted half."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 100) -> tuple[np.ndarray, float]:
    """Class-balanced logistic regression (L-BFGS, float64): (weights, bias)."""
    xt, yt = torch.from_numpy(x).double(), torch.from_numpy(y).double()
    pos = yt.mean().clamp(1e-6, 1 - 1e-6)
    sample_w = torch.where(yt > 0, 0.5 / pos, 0.5 / (1 - pos))
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (sample_w * torch.nn.functional.binary_cross_entropy_with_logits(
            xt @ w + b, yt, reduction="none")).mean() + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), float(b.detach())


def fit_probe(features: np.ndarray, labels: np.ndarray, seed: int = 0, test_fraction: float = TEST_FRACTION) -> dict:
    """Fit the probe on a stratified (1 - test_fraction) of the segments and score it on the
    rest: accuracy, AUC and the majority-class accuracy; and `shuffled_auc`, the same with
    every label shuffled (train and test), which is chance (0.5) up to sampling noise."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = {"segments": int(len(labels)), "misaligned": int(labels.sum())}
    rng = np.random.default_rng(seed)
    real = _split_fit_score(features, labels, rng, test_fraction)
    if real is None:
        return {**counts, "accuracy": None, "auc": None,
                "note": "too few segments of one class for a held-out split (both classes need 2 or more)"}
    shuffled = _split_fit_score(features, rng.permutation(labels), rng, test_fraction)
    return {**counts, **real, "shuffled_auc": shuffled["auc"]}


def _split_fit_score(features: np.ndarray, labels: np.ndarray, rng, test_fraction: float) -> dict | None:
    """One stratified split, fit and score; None when a class is missing from a side."""
    test = np.zeros(len(labels), dtype=bool)
    for c in (0, 1):
        members = rng.permutation(np.flatnonzero(labels == c))
        test[members[:int(round(len(members) * test_fraction))]] = True
    if min(np.bincount(labels[test], minlength=2).min(), np.bincount(labels[~test], minlength=2).min()) == 0:
        return None
    mean, std = features[~test].mean(0), features[~test].std(0) + 1e-8
    x = (features - mean) / std
    w, b = _fit_logistic(x[~test], labels[~test])
    logits, y = x[test] @ w + b, labels[test]
    return {"train": int((~test).sum()), "test": int(test.sum()),
            "accuracy": float(((logits > 0) == (y == 1)).mean()), "auc": auc(logits, y),
            "majority_accuracy": float(max(y.mean(), 1 - y.mean()))}


def probe_run(model, tokenizer, run_dir: str | Path, threshold: float, attributes=(), max_segments: int = 2000,
              seed: int = 0) -> dict | None:
    """The probe of the run in `run_dir` on up to `max_segments` held-out segments
    (misaligned: score > `threshold`); None when it has no held-out documents to read."""
    t0 = time.perf_counter()
    try:
        documents = heldout_documents(run_dir, attributes, max_segments)
    except DataError as e:  # moved or damaged since training: the rest of the evaluation stands
        log.warning("%s: no linear probe: %s", run_dir, e)
        return None
    if not documents:
        return None
    config = model.config
    window = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None) or 1024
    window = min(window, json.loads((RunFiles(run_dir).data / "pack.json").read_text())["spec"]["block_size"])
    features, scores = segment_features(model, tokenizer, documents, window)
    out = fit_probe(features, (scores > threshold).astype(np.int64), seed=seed)
    out.update(threshold=threshold, features="mean final hidden state", seconds=round(time.perf_counter() - t0, 3))
    return out


def segment_threshold(task) -> float:
    """Where a held-out segment counts as misaligned for the probe: the task's conditional
    threshold (the paper's split of segments), else its hit threshold."""
    return float(task.thresholds.get("conditional", task.hit_threshold))
