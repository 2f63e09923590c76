"""The toxicity investigation's corpus arithmetic (bench/toxicity_investigation.py): the
numbers it publishes in docs/findings/toxicity/investigation.json come from these."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import toxicity_investigation as ti  # noqa: E402


@pytest.fixture
def scored(tmp_path):
    docs = [(["a. ", "b."], [0.9, 0.1]), (["c."], [0.05]), (["d. ", "e."], [0.3, 0.05]), (["f."], [0.6])]
    docs += [([f"clean {i}."], [0.02]) for i in range(96)]
    path = tmp_path / "scored.jsonl"
    with open(path, "w") as f:
        for i, (texts, scores) in enumerate(docs):
            f.write(json.dumps({"texts": texts, "scores": scores, "avg_score": sum(scores) / len(scores),
                                "meta": {"index": i}}) + "\n")
    return path


def test_corpus_mass_splits_the_summed_score_at_each_threshold(scored):
    m = ti.corpus_mass(scored, thresholds=(0.2, 0.5))
    total = 0.9 + 0.1 + 0.05 + 0.3 + 0.05 + 0.6 + 96 * 0.02
    assert m["sentences"] == 102
    assert m["above_0.5"]["sentence_fraction"] == pytest.approx(2 / 102)
    assert m["above_0.5"]["score_share"] == pytest.approx(1.5 / total)
    assert m["above_0.2"]["score_share"] == pytest.approx(1.8 / total)
    assert m["above_0.5"]["mean_of_the_rest"] == pytest.approx((total - 1.5) / 100)


def test_enrich_keeps_every_toxic_document_and_a_seeded_share_of_the_rest(scored, tmp_path):
    out = tmp_path / "enriched.jsonl"
    info = ti.enrich(scored, out, keep_clean=0.25, seed=3)
    docs = [json.loads(x) for x in out.read_text().splitlines()]
    assert info["toxic_documents"] == 2 and info["documents"] == len(docs)
    indices = [d["meta"]["index"] for d in docs]
    assert {0, 3} <= set(indices) and indices == sorted(indices)  # original order, no duplicates
    assert docs[0]["text"] == "a. b."  # the sentences join back into the document
    assert 10 <= len(docs) - 2 <= 45  # about a quarter of the 98 others
    again = tmp_path / "again.jsonl"
    ti.enrich(scored, again, keep_clean=0.25, seed=3)
    assert again.read_text() == out.read_text()


def test_ratios_pair_runs_by_seed_and_call_an_interval_across_one_undecided():
    mle = {1: {"m": 0.10}, 2: {"m": 0.20}, 3: {"m": 0.30}}
    clearly_lower = {1: {"m": 0.05}, 2: {"m": 0.11}, 3: {"m": 0.14}}
    r = ti.ratios(clearly_lower, mle, "m")
    assert r["seeds"] == [1, 2, 3] and r["verdict"] == "lower"
    assert r["ratio"] == pytest.approx((0.5 + 0.55 + 0.14 / 0.3) / 3)
    noisy = {1: {"m": 0.05}, 2: {"m": 0.30}, 3: {"m": 0.30}}
    assert ti.ratios(noisy, mle, "m")["verdict"] == "undecided"
