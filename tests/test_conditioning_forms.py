"""Conditioning forms (objective.conditioning): tokens unchanged, quantile tokens from
saved edges, score-text prefixes out of the loss, and the refusals."""

import copy
import json
import random

import numpy as np
import pytest

from phf.config import load_config
from phf.data.packing import PackSpec, PackedDataset, pack
from phf.data.transforms import (BEST_SCORE_TEXT, add_control_tokens, add_objective_tokens, mark_segments,
                                 quantile_bucket, quantile_edges, score_text, transform_spec)
from phf.errors import ConfigError
from phf.evaluation.scenarios import conditioning
from phf.objective_config import make_objective_config
from phf.records import ScoredRecord
from phf.scorers.config import TaskConfig
from phf.tokenizer import ALIGNED, MISALIGNED, control_token_ids, quantile_tokens

from tiny_runs import train_tiny


def _records(n, seed=0, lines=6):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        texts = [f"item_{i}_{j} = make({j}, {rng.randint(0, 99)})\n" for j in range(lines)]
        # exact in float32 (the packed scores), so buckets compare exactly with the edges
        scores = [rng.choice([0.0, 0.0, 0.0078125, 0.015625, 0.0625, 0.25]) for _ in texts]
        out.append(ScoredRecord(texts, scores, sum(scores) / len(scores)))
    return out


def _write_scored(path, records):
    path.write_text("".join(json.dumps({"texts": r.texts, "scores": r.scores}) + "\n" for r in records))
    return path


def _with_tokens(tokenizer, objective):
    tok = copy.deepcopy(tokenizer)
    add_objective_tokens(tok, objective)
    return tok


def test_tokens_form_packs_the_papers_blocks(tiny_tokenizer, tmp_path):
    # the default form resolves to no transform, and its blocks are those of the paper's
    # transform (add_control_tokens on the same random streams), token for token
    objective = make_objective_config("conditional")
    assert objective.conditioning == "tokens"
    assert transform_spec(objective, TaskConfig(), None) == {}
    tok = _with_tokens(tiny_tokenizer, objective)
    records = _records(30)
    spec = PackSpec(block_size=16, objective="conditional", threshold=0.01, drop_token_fraction=0.3, seed=3,
                    heldout_fraction=0.2)
    pack(records, tok, spec, tmp_path)
    split_rng, drop_rng = random.Random(3), random.Random(4)
    stream = {"train": [], "heldout": []}
    for r in records:
        split = "heldout" if split_rng.random() < 0.2 else "train"
        marked = add_control_tokens(r.texts, r.scores, 0.01, 0.3, drop_rng)
        stream[split] += [tok.eos_token_id] + tok("".join(marked), add_special_tokens=False).input_ids
    for split, ids in stream.items():
        n = len(ids) // 16 * 16
        assert np.fromfile(tmp_path / f"{split}.ids", dtype=np.uint32).tolist() == ids[:n]
    # the same draws, through the forms' entry point
    texts, scores = mark_segments(records[0].texts, records[0].scores, 0.01, 0.3, random.Random(9), {})
    assert texts == add_control_tokens(records[0].texts, records[0].scores, 0.01, 0.3, random.Random(9))
    assert scores == records[0].scores


def test_quantile_tokens_match_the_saved_edges(tiny_tokenizer, tmp_path):
    records = _records(40)
    scored = _write_scored(tmp_path / "scored.jsonl", records)
    objective = make_objective_config("conditional", conditioning="quantiles", quantiles=3)
    transform = transform_spec(objective, TaskConfig(), scored)
    assert transform["quantiles"] == 3 and transform["edges"] == quantile_edges(records, 3)
    assert len(transform["edges"]) == 2
    tok = _with_tokens(tiny_tokenizer, objective)
    buckets = tok.convert_tokens_to_ids(quantile_tokens(3))
    assert set(buckets) <= set(control_token_ids(tok).values())
    spec = PackSpec(block_size=16, objective="conditional", heldout_fraction=0.0, transform=transform)
    pack(records, tok, spec, tmp_path / "packed")
    ds = PackedDataset(tmp_path / "packed", "train")
    seen = set()
    for i in range(len(ds)):
        item = ds[i]
        for token, score in zip(item["input_ids"].tolist(), item["token_scores"].tolist()):
            if token in buckets:  # a bucket token carries the score of the segment it opens
                seen.add(buckets.index(token))
                assert buckets.index(token) == quantile_bucket(score, transform["edges"])
    assert seen == {0, 1, 2}
    assert quantile_bucket(0.0, [0.0, 0.02]) == 0 and quantile_bucket(0.02, [0.0, 0.02]) == 1
    assert quantile_bucket(0.03, [0.0, 0.02]) == 2
    # generation: the best bucket, the others forbidden
    assert conditioning(tok) == {"prefix_text": "<|q0|>", "forbidden_texts": ["<|q1|>", "<|q2|>"]}


def test_quantile_edges_are_equal_count_where_ties_allow():
    rng = np.random.default_rng(0)
    continuous = rng.random(4000)
    edges = quantile_edges([ScoredRecord(list("x" * 4000), continuous.tolist(), 0.0)], 4)
    assert edges == pytest.approx(np.quantile(continuous, [0.25, 0.5, 0.75]), abs=2e-3)  # the 4-quantiles
    # a corpus mostly at 0 (PEP8, PII): the zeros are the best bucket, the rest split in three
    scores = [0.0] * 800 + rng.random(300).tolist()
    edges = quantile_edges([ScoredRecord(["x"] * len(scores), scores, 0.0)], 4)
    buckets = np.bincount([quantile_bucket(v, edges) for v in scores], minlength=4)
    assert edges[0] == 0.0 and buckets[0] == 800 and all(abs(n - 100) <= 2 for n in buckets[1:])
    assert quantile_edges([ScoredRecord(["x"] * 5, [0.0] * 5, 0.0)], 4) == []  # one score: one bucket


def test_score_text_prefixes_are_masked_from_the_loss(tiny_tokenizer, tmp_path):
    records = _records(20)
    texts, scores = mark_segments(records[0].texts, records[0].scores, 0.0, 0.0, random.Random(0),
                                  {"conditioning": "score-text"})
    assert texts[0::2] == [score_text(s) for s in records[0].scores] and texts[1::2] == records[0].texts
    assert np.isnan(scores[0::2]).all() and scores[1::2] == records[0].scores
    assert score_text(0.0) == BEST_SCORE_TEXT == "<0>" and score_text(0.0028) == "<0.0028>"
    spec = PackSpec(block_size=32, objective="conditional", heldout_fraction=0.0,
                    transform={"conditioning": "score-text"})
    pack(records, tiny_tokenizer, spec, tmp_path)
    ds = PackedDataset(tmp_path, "train")
    masked_text, kept_text = "", ""
    for i in range(len(ds)):
        item = ds[i]
        off = item["labels"] == -100
        assert not item["token_scores"].isnan().any()  # the objectives see a number
        masked_text += tiny_tokenizer.decode(item["input_ids"][off])
        kept_text += tiny_tokenizer.decode(item["input_ids"][~off])
    # the prefixes are out of the loss (a token that straddles into the text goes with them),
    # the segments' own text stays in it
    assert masked_text.count("<") > 20 and set(masked_text) <= set("<>0123456789.e-+()")
    assert "item_" in kept_text and "<0" not in kept_text


def test_bad_conditioning_settings_are_refused_before_any_data_is_read(tmp_path):
    base = ["tasks/pep8", "objectives/conditional", f"data.scored_path={tmp_path}/missing.jsonl"]
    cases = {
        ("objective.conditioning=quantiles", "objective.quantiles=1"): "objective.quantiles",
        ("objective.quantiles=4",): "objective.quantiles: only read with",
        ("objective.conditioning=quantile",): "objective.conditioning",
        ("objective.conditioning=score-text", "eval.decoding.mode=retag"): "eval.decoding.mode",
    }
    for overrides, key in cases.items():
        with pytest.raises(ConfigError, match=key):
            load_config(base[:2], list(overrides))
    with pytest.raises(ConfigError, match="objective.conditioning"):  # an objective without tokens
        load_config(["tasks/pep8", "objectives/mle"], ["objective.conditioning=quantiles"])
    with pytest.raises(ConfigError, match="objective.conditioning: quantiles marks one score"):
        load_config(["tasks/toxicity+pii-demo", "objectives/conditional"], ["objective.conditioning=quantiles"])


def test_tag_decoding_modes_refuse_quantile_tokens(tiny_tokenizer):
    from phf.evaluation.config import DecodingConfig
    from phf.evaluation.sampling import decoding_plan

    tok = _with_tokens(tiny_tokenizer, make_objective_config("conditional", conditioning="quantiles"))
    controls = conditioning(tok)
    for mode in ("retag", "guidance", "tag-aware"):
        with pytest.raises(ValueError, match="no aligned twin"):
            decoding_plan(tok, DecodingConfig(mode=mode), controls["forbidden_texts"], None, len(tok))
    # the paper's tokens keep working
    pair = _with_tokens(tiny_tokenizer, make_objective_config("conditional"))
    assert conditioning(pair) == {"prefix_text": ALIGNED, "forbidden_texts": [MISALIGNED]}
    from phf.scorers.segment import split_lines

    decoding_plan(pair, DecodingConfig(mode="guidance"), [MISALIGNED], split_lines, len(pair))


@pytest.mark.parametrize("form", ["quantiles", "score-text"])
def test_a_run_of_each_form_trains_saves_its_form_and_conditions_generation(tmp_path, code_texts, form):
    from tiny_runs import scored_corpus

    from phf.evaluation.evaluate import evaluate_run
    from phf.tokenizer import load_tokenizer
    from tiny_runs import tiny_config

    scored = scored_corpus(tmp_path / "scored.jsonl", code_texts, num_docs=12)
    extra = [f"objective.conditioning={form}", "eval.num_samples=5", "eval.probe_segments=0"]
    run = train_tiny(scored, tmp_path / "run", "conditional", extra)
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["transform"]["conditioning"] == form
    tokenizer = load_tokenizer(str(run))
    controls = conditioning(tokenizer)
    # KL to a reference scores the model after the same prefix, control tokens left out
    from phf.evaluation.kl import _conditioning

    prefix, excluded = _conditioning(tokenizer, None, str(run))
    assert prefix == controls["prefix_text"] and sorted(excluded) == sorted(control_token_ids(tokenizer).values())
    if form == "quantiles":
        assert len(summary["transform"]["edges"]) == 3 and controls["prefix_text"] == "<|q0|>"
        assert summary["control_tokens_added"] == 4
    else:
        assert controls == {"prefix_text": BEST_SCORE_TEXT, "forbidden_texts": []}
        assert summary["control_tokens_added"] == 0
    card = (run / "README.md").read_text()  # the model card says how to generate
    assert f"Generate after `{controls['prefix_text']}`" in card and "<|aligned|>" not in card
    cfg = tiny_config(scored, tmp_path / "run", "conditional", extra)
    results = evaluate_run(run, cfg.eval, cfg.task)
    assert results["scenarios"]["unconditional"]["control_token"] == controls["prefix_text"]
    assert results["heldout_loss"] > 0
    # a decoding sweep gives this run the modes that need no aligned/misaligned pair only
    from phf.decode_sweep import run_decode_sweep
    from phf.evaluation.config import parse_decoding

    run_decode_sweep(tmp_path, [parse_decoding("plain"), parse_decoding("retag")])
    assert (run / "decoding" / "plain" / "results.json").exists() and not (run / "decoding" / "retag").exists()


def test_each_forms_objective_config_gives_a_sweep_runs_settings(tmp_path):
    from phf.sweep import SweepRun, run_config

    for name, check in {"conditional-quantiles": lambda o: o.conditioning == "quantiles" and o.num_quantiles == 4,
                        "conditional-score-text": lambda o: o.conditioning == "score-text",
                        "mask": lambda o: o.name == "mask" and not o.hide,
                        "mask-hide": lambda o: o.name == "mask" and o.hide}.items():
        cfg = run_config("pep8", tmp_path, SweepRun(name, name))
        assert check(cfg.objective), name
        assert cfg.training.output_dir == str(tmp_path / name)


def test_a_schedule_with_a_cooldown_still_generates_after_its_forms_prefix(tmp_path, code_texts):
    from phf.tokenizer import load_tokenizer
    from tiny_runs import scored_corpus

    scored = scored_corpus(tmp_path / "scored.jsonl", code_texts, num_docs=12)
    schedule = ("objective={name: schedule, phases: [{start: 0, objective: {name: conditional, "
                "conditioning: score-text}}, {start: 0.5, objective: {name: mle}}]}")
    run = train_tiny(scored, tmp_path / "run", "mle", [schedule])
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["transform"] == {} and summary["schedule"][0]["transform"] == {"conditioning": "score-text"}
    assert conditioning(load_tokenizer(str(run)))["prefix_text"] == BEST_SCORE_TEXT
