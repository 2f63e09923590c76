"""Several preferences in one run: records, the control-token scheme, and a tiny run."""

import json
import math
import random

import pytest

from tiny_runs import tiny

from phf.data.packing import PackedDataset
from phf.records import read_scored
from phf.data.transforms import add_attribute_control_tokens
from phf.evaluation.conditioning import all_conditionings, conditioning_controls, evaluate_conditionings
from phf.scorers import get_scorer
from phf.records import ScoredRecord, combine_scores
from phf.tokenizer import add_control_tokens, attribute_tokens

ATTRS = {"toxicity": {"threshold": 0.5, "drop_token_fraction": 0.0},
         "pii": {"threshold": 0.0, "drop_token_fraction": 0.0}}

# real English sentences: clean, toxic, with PII, and both
SENTENCES = [
    "The committee will meet again on Tuesday to discuss the budget. ",
    "You are a stupid idiot and everybody hates you. ",
    "Write to jane.doe@example.org if the package fails to build. ",
    "Shut up, you worthless moron, and mail john.smith@example.com now. ",
    "Rain is expected over the hills later this week. ",
]


@pytest.fixture(scope="module")
def multi():
    return get_scorer("multi", segmenter="sentences",
                      scorers={"toxicity": {"name": "toxicity"}, "pii": {"name": "pii"}})


def test_multi_scorer_scores_every_attribute_on_the_same_segments(multi):
    doc = "".join(SENTENCES)
    texts, scores = multi.score_document(doc)
    assert "".join(texts) == doc
    assert set(scores) == {"toxicity", "pii"}
    assert all(len(v) == len(texts) for v in scores.values())
    tox, pii = scores["toxicity"], scores["pii"]
    assert tox[1] > 0.5 and tox[0] < 0.5 and tox[4] < 0.5
    assert pii[2] > 0 and pii[3] > 0 and pii[0] == 0 and pii[1] == 0
    avg = multi.document_score(texts, scores)
    assert set(avg) == {"toxicity", "pii"} and avg["pii"] > 0


def test_scoring_summary_counts_each_attribute_against_its_own_threshold(multi):
    from phf.data.scoring import ScoringSummary

    texts, scores = multi.score_document("".join(SENTENCES))
    record = ScoredRecord(texts, scores, multi.document_score(texts, scores))
    summary = ScoringSummary(threshold={a: spec["threshold"] for a, spec in ATTRS.items()})
    summary.add(record)
    # toxic: sentences 1 and 3; PII: 2 and 3; misaligned on either: 1, 2 and 3
    assert summary.attribute_means["toxicity"]["misaligned_fraction"] == 2 / 5
    assert summary.attribute_means["pii"]["misaligned_fraction"] == 2 / 5
    assert summary.misaligned_fraction == 3 / 5
    with pytest.raises(ValueError, match="no misalignment threshold for attribute 'pii'"):
        ScoringSummary(threshold={"toxicity": 0.5}).add(record)


def test_task_scorer_scores_samples_by_the_task_rule():
    from phf.config import load_config
    from phf.scorers import task_scorer

    cfg = load_config(["tasks/toxicity+pii-demo"])
    scorer = task_scorer(cfg.task)
    by_attribute = scorer.score_texts_by_attribute(SENTENCES)
    combined = scorer.score_texts(SENTENCES)
    expected = [max(t, 100 * p) for t, p in zip(by_attribute["toxicity"], by_attribute["pii"])]
    assert combined == pytest.approx(expected)
    assert combined[2] > combined[0]  # the e-mail sentence is worse than the clean one


def test_single_and_multi_attribute_records_both_load(tmp_path):
    single = {"texts": ["a\n", "b\n"], "scores": [0.0, 0.5], "avg_score": 0.25, "meta": {}}
    double = {"texts": ["a\n", "b\n"], "scores": {"toxicity": [0.0, 0.9], "pii": [0.01, 0.0]},
              "avg_score": {"toxicity": 0.45, "pii": 0.005}, "meta": {}}
    path = tmp_path / "scored.jsonl"
    path.write_text(json.dumps(single) + "\n" + json.dumps(double) + "\n")
    a, b = list(read_scored(path))
    assert a.scores == [0.0, 0.5] and b.scores["toxicity"] == [0.0, 0.9]
    assert a.attributes == [] and b.attributes == ["toxicity", "pii"]
    assert a.segment_scores() == [0.0, 0.5]
    assert b.segment_scores("max") == [0.01, 0.9]
    assert b.segment_scores("weighted_sum", {"pii": 100}) == pytest.approx([1.0, 0.9])
    assert a.document_score() == 0.25 and b.document_score() == 0.45


def test_multi_attribute_record_with_a_short_score_list_is_rejected(tmp_path):
    bad = {"texts": ["a\n", "b\n"], "scores": {"toxicity": [0.0], "pii": [0.0, 0.0]}, "meta": {}}
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1.*toxicity"):
        list(read_scored(path))


def test_combine_rules():
    per = {"toxicity": [0.1, 0.9], "pii": [0.004, 0.0]}
    assert combine_scores(per, "max") == [0.1, 0.9]
    assert combine_scores(per, "max", {"pii": 100}) == pytest.approx([0.4, 0.9])
    assert combine_scores(per, "weighted_sum") == pytest.approx([0.104, 0.9])
    with pytest.raises(ValueError, match="max, weighted_sum"):
        combine_scores(per, "mean")


def test_one_token_per_attribute_in_a_fixed_order():
    texts = ["clean. ", "toxic. ", "pii. ", "both. "]
    scores = {"toxicity": [0.1, 0.9, 0.1, 0.9], "pii": [0.0, 0.0, 0.02, 0.02]}
    out = add_attribute_control_tokens(texts, scores, ATTRS, random.Random(0))
    ta, tm = attribute_tokens("toxicity")
    pa, pm = attribute_tokens("pii")
    assert out == [ta + pa + "clean. ", tm + pa + "toxic. ", ta + pm + "pii. ", tm + pm + "both. "]


def test_each_attribute_drops_its_token_with_its_own_fraction():
    n = 20_000
    attrs = {"toxicity": {"threshold": 0.5, "drop_token_fraction": 0.3},
             "pii": {"threshold": 0.0, "drop_token_fraction": 0.05}}
    out = add_attribute_control_tokens(["x. "] * n, {"toxicity": [0.0] * n, "pii": [0.0] * n}, attrs,
                                       random.Random(2))
    for name, p in (("toxicity", 0.3), ("pii", 0.05)):
        dropped = sum(attribute_tokens(name)[0] not in s for s in out)
        assert abs(dropped - n * p) < 4 * math.sqrt(n * p * (1 - p)), name
    # the two drops are independent: both missing about p1 * p2 of the time
    both = sum(s == "x. " for s in out)
    assert abs(both - n * 0.015) < 4 * math.sqrt(n * 0.015)


def test_generation_controls_enforce_a_subset():
    assert all_conditionings(["toxicity", "pii"]) == [(), ("toxicity",), ("pii",), ("toxicity", "pii")]
    c = conditioning_controls(["toxicity"])
    assert c == {"prefix_text": "<|toxicity:aligned|>", "forbidden_texts": ["<|toxicity:misaligned|>"]}
    both = conditioning_controls(["toxicity", "pii"])
    assert both["prefix_text"] == "<|toxicity:aligned|><|pii:aligned|>"
    assert both["forbidden_texts"] == ["<|toxicity:misaligned|>", "<|pii:misaligned|>"]


def test_forbidden_tokens_are_never_generated(tiny_tokenizer):
    import copy

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from phf.evaluation.sampling import generate_samples

    tok = copy.deepcopy(tiny_tokenizer)
    add_control_tokens(tok, ["toxicity", "pii"])
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_layer=1, n_embd=32, n_head=2))
    banned = tok.convert_tokens_to_ids("<|toxicity:misaligned|>")
    other = tok.convert_tokens_to_ids("<|pii:misaligned|>")
    with torch.no_grad():  # make the banned tokens the model's favourites
        model.lm_head.weight[banned] = 0
        model.lm_head.weight[other] = 0
        model.transformer.wte.weight[banned] = 0
        model.transformer.wte.weight[other] = 0
        model.transformer.ln_f.bias.fill_(1.0)
        model.lm_head.weight[banned] += 5.0
        model.lm_head.weight[other] += 5.0
    texts = generate_samples(model, tok, 8, max_new_tokens=12, batch_size=8, skip_special_tokens=False,
                             progress=False, **conditioning_controls(["toxicity"]))
    assert not any("<|toxicity:misaligned|>" in t for t in texts)
    assert any("<|pii:misaligned|>" in t for t in texts)  # not enforced: still allowed


def test_tiny_two_attribute_run(tmp_path, multi):
    from phf.config import load_config
    from phf.data.scoring import score_corpus
    from phf.model import load_model
    from phf.tokenizer import load_tokenizer
    from phf.train import train

    rng = random.Random(0)
    docs = [{"text": "".join(rng.choice(SENTENCES) for _ in range(6)), "meta": {"i": i}} for i in range(120)]
    scored = tmp_path / "scored.jsonl"
    score_corpus(docs, str(scored), "multi", {"segmenter": "sentences", "scorers": {
        "toxicity": {"name": "toxicity"}, "pii": {"name": "pii"}}}, num_workers=1)
    records = list(read_scored(scored))
    assert len(records) == 120 and set(records[0].scores) == {"toxicity", "pii"}

    cfg = load_config(["tasks/toxicity+pii-demo", "objectives/conditional", "models/tiny"], [
        f"data.scored_path={scored}", f"training.output_dir={tmp_path / 'run'}",
        *tiny({"model.config_overrides": "{n_layer: 1, n_embd: 32, n_head: 2}", "training.block_size": 32,
               "training.effective_batch_size": 4, "training.num_tokens": 1024, "eval.every_steps": 0,
               "eval.num_samples": 4, "eval.max_new_tokens": 8, "eval.group_size": 2,
               "data.heldout_fraction": 0.02})])
    run = train(cfg)
    tok = load_tokenizer(str(run))
    for a in ("toxicity", "pii"):
        for t in attribute_tokens(a):
            assert t in tok.get_vocab()
    # the packed data carries both attributes' tokens
    data = PackedDataset(run / "data", "train")
    ids = {i for b in range(len(data)) for i in data[b]["input_ids"].tolist()}
    for a in ("toxicity", "pii"):
        assert ids & set(tok.convert_tokens_to_ids(list(attribute_tokens(a)))), a

    rows = evaluate_conditionings(load_model(str(run)), tok, multi, cfg.eval, out_dir=run)
    assert [r["conditioning"] for r in rows] == [
        "unconditional", "toxicity aligned", "pii aligned", "toxicity aligned + pii aligned"]
    assert all(r["toxicity"] >= 0 and r["pii"] >= 0 for r in rows)
    assert (run / "samples" / "conditioning-toxicity-pii.jsonl").exists()
