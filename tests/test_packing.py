"""Packing: token scores follow their segments; transforms do what the paper says."""

import copy
import json
import math
import random

import numpy as np
import pytest

from phf.config import load_config
from phf.data.packing import PackSpec, PackedDataset, encode_documents, pack
from phf.records import ScoredRecord
from phf.data.transforms import add_control_tokens, keep_document, percentile_threshold, resolve_threshold
from phf.tokenizer import ALIGNED, MISALIGNED, add_control_tokens as add_control_vocab


def _record(texts, scores):
    return ScoredRecord(texts, scores, sum(scores) / len(scores))


def _records(n, seed=0, lines=8):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        texts = [f"value_{i}_{j} = compute({j}, {rng.randint(0, 99)})\n" for j in range(lines)]
        scores = [rng.choice([0.0, 0.0, 0.0, 0.05]) for _ in texts]
        out.append(_record(texts, scores))
    return out


def test_each_token_gets_its_segments_score(tiny_tokenizer):
    texts = ["def f(x):\n", "    return x+1\n", "\n", "y=f(2)\n"]
    scores = [0.0, 0.1, 0.0, 0.25]
    [(ids, token_scores)] = encode_documents(tiny_tokenizer, [(texts, scores)])
    assert len(ids) == len(token_scores)
    enc = tiny_tokenizer.backend_tokenizer.encode("".join(texts), add_special_tokens=False)
    starts = np.cumsum([0] + [len(t) for t in texts])
    for (begin, _), s in zip(enc.offsets, token_scores):
        segment = int(np.searchsorted(starts, begin, side="right")) - 1
        assert s == pytest.approx(scores[segment])
    # every segment's score appears on at least one token
    assert set(np.round(token_scores.astype(float), 4)) == {0.0, 0.1, 0.25}


def test_control_tokens_precede_their_segments(tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    add_control_vocab(tok)
    vocab = tok.get_vocab()
    texts = ["a = 1\n", "b=2\n", "c = 3\n"]
    scores = [0.0, 0.5, 0.0]
    marked = add_control_tokens(texts, scores, threshold=0.0, drop_token_fraction=0.0, rng=random.Random(0))
    assert marked == [ALIGNED + "a = 1\n", MISALIGNED + "b=2\n", ALIGNED + "c = 3\n"]
    [(ids, token_scores)] = encode_documents(tok, [(marked, scores)])
    control = {vocab[ALIGNED]: "aligned", vocab[MISALIGNED]: "misaligned"}
    found = [(control[i], s) for i, s in zip(ids.tolist(), token_scores) if i in control]
    # each control token is one token and carries the score of the segment it opens
    assert found == [("aligned", 0.0), ("misaligned", 0.5), ("aligned", 0.0)]


def test_drop_token_fraction_within_statistical_bounds():
    n, p = 20_000, 0.1
    marked = add_control_tokens(["x\n"] * n, [0.0] * n, 0.0, p, random.Random(1))
    dropped = sum(not m.startswith("<|") for m in marked)
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(dropped - n * p) < 4 * sigma


def test_threshold_splits_aligned_from_misaligned():
    marked = add_control_tokens(["a", "b", "c"], [0.001, 0.002, 0.003], 0.002, 0.0, random.Random(0))
    assert [m[: len(ALIGNED)] == ALIGNED for m in marked] == [True, True, False]


def test_filtering_absolute_and_percentile(tiny_tokenizer, tmp_path):
    records = _records(200)
    avg = np.array([r.avg_score for r in records])
    t = percentile_threshold(records, 50, per_document=True)
    assert t == pytest.approx(np.percentile(avg, 50))
    kept = [r for r in records if keep_document(r, t)]
    assert len(kept) == int((avg <= t).sum())
    spec = PackSpec(block_size=32, objective="filtering", threshold=t, heldout_fraction=0.1, seed=3)
    stats = pack(records, tiny_tokenizer, spec, tmp_path / "f")
    train_docs = stats.documents["train"]
    mle = pack(records, tiny_tokenizer, PackSpec(block_size=32, heldout_fraction=0.1, seed=3), tmp_path / "m")
    assert stats.filtered_documents > 0
    assert train_docs + stats.filtered_documents == mle.documents["train"]
    # the held-out split is never filtered: same documents as the MLE run
    assert stats.documents["heldout"] == mle.documents["heldout"]
    assert stats.tokens["train"] < mle.tokens["train"]


def test_resolve_threshold_from_config(tmp_path):
    path = tmp_path / "scored.jsonl"
    records = _records(50)
    path.write_text("".join(json.dumps(r.to_json()) + "\n" for r in records))
    cfg = load_config(["tasks/pep8", "objectives/filtering"], [f"data.scored_path={path}"])
    assert resolve_threshold(cfg.objective, cfg.task, path) == pytest.approx(0.002361)  # the paper's PEP8 value
    cfg = load_config(["tasks/pep8", "objectives/filtering"],
                      [f"data.scored_path={path}", "objective.percentile=90"])
    expected = np.percentile([r.avg_score for r in records], 90)
    assert resolve_threshold(cfg.objective, cfg.task, path) == pytest.approx(expected)
    cfg = load_config(["tasks/pep8", "objectives/conditional"], ["objective.threshold=0.01"])
    assert resolve_threshold(cfg.objective, cfg.task, path) == 0.01


def test_packing_is_deterministic_and_blocks_are_full(tiny_tokenizer, tmp_path):
    records = _records(60)
    spec = PackSpec(block_size=16, objective="conditional", threshold=0.0, drop_token_fraction=0.2, seed=5)
    tok = copy.deepcopy(tiny_tokenizer)
    add_control_vocab(tok)
    a = pack(records, tok, spec, tmp_path / "a")
    b = pack(records, tok, spec, tmp_path / "b")
    assert a == b
    for split in ("train", "heldout"):
        assert (tmp_path / "a" / f"{split}.ids").read_bytes() == (tmp_path / "b" / f"{split}.ids").read_bytes()
    ds = PackedDataset(tmp_path / "a", "train")
    assert len(ds) == a.blocks["train"] and len(ds) > 0
    item = ds[0]
    assert item["input_ids"].shape == item["labels"].shape == item["token_scores"].shape == (16,)


def test_heldout_labels_leave_control_tokens_out(tiny_tokenizer, tmp_path):
    tok = copy.deepcopy(tiny_tokenizer)
    add_control_vocab(tok)
    ids = tok.convert_tokens_to_ids([ALIGNED, MISALIGNED])
    spec = PackSpec(block_size=16, objective="conditional", threshold=0.0, heldout_fraction=0.5, seed=1)
    pack(_records(40), tok, spec, tmp_path)
    ds = PackedDataset(tmp_path, "heldout", ignore_ids=ids)
    seen_control = False
    for i in range(len(ds)):
        item = ds[i]
        is_control = np.isin(item["input_ids"].numpy(), ids)
        seen_control |= bool(is_control.any())
        assert (item["labels"].numpy()[is_control] == -100).all()
        assert (item["labels"].numpy()[~is_control] == item["input_ids"].numpy()[~is_control]).all()
    assert seen_control


def test_a_run_reuses_its_packed_blocks_only_with_the_same_tokenizer(tmp_path, code_texts, monkeypatch):
    import phf.train
    from phf.tokenizer import train_tokenizer
    from tiny_runs import scored_corpus, tiny_config

    cfg = tiny_config(scored_corpus(tmp_path / "scored.jsonl", code_texts, num_docs=6), tmp_path / "run")
    small, large = train_tokenizer(code_texts[:10], 300), train_tokenizer(code_texts[:10], 400)
    calls = []
    real_pack = phf.train.pack
    monkeypatch.setattr(phf.train, "pack", lambda *a, **k: calls.append(a[1]) or real_pack(*a, **k))
    data = tmp_path / "run" / "data"
    scored = cfg.data.scored_path

    def pack_for_run(tok):
        return phf.train.pack_for_run(phf.train.pack_spec(cfg, tok, 0.0), tok, scored, data)

    first = pack_for_run(small)
    again = pack_for_run(small)
    assert calls == [small] and len(again) == len(first)  # reused
    pack_for_run(large)
    assert calls == [small, large]  # another tokenizer: packed again
    ids = np.fromfile(data / "train.ids", dtype=np.uint32)
    assert ids.max() >= 300  # the new pack's ids come from the larger vocabulary
