"""The decoding modes (eval.decoding): plain is the original sampler, guidance is the
two-stream formula, retag puts tags exactly at segment boundaries, tag-aware keeps to
max_tries, rerank keeps the best candidate, and every bad setting gets its error."""

from __future__ import annotations

import pytest
import torch

from phf.config import load_config
from phf.errors import ConfigError
from phf.evaluation import decoding as decoding_module
from phf.evaluation import sampling
from phf.evaluation.config import DecodingConfig, EvalConfig, parse_decoding
from phf.evaluation.nucleus import nucleus_sample
from phf.evaluation.sampling import generate_samples, segment_boundaries
from phf.model import padding_token_ids
from phf.scorers.segment import split_lines
from phf.scorers.sentences import split_sentences
from phf.tokenizer import ALIGNED, MISALIGNED, load_tokenizer
from tiny_runs import scored_corpus, tiny_lm, tiny_tokenizer, train_tiny

CONTROLS = {"prefix_text": ALIGNED, "forbidden_texts": [MISALIGNED]}


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory, code_texts):
    """A tiny conditional run trained long enough to write lines (~7 s)."""
    out = tmp_path_factory.mktemp("decoding")
    scored = scored_corpus(out / "scored.jsonl", code_texts)
    return train_tiny(scored, out / "run", "conditional",
                      ["training.num_tokens=24576", "eval.every_steps=0", "training.learning_rate=3e-3"])


@pytest.fixture(scope="module")
def lm(conditional_run):
    from phf.model import load_model

    return load_model(str(conditional_run)), load_tokenizer(str(conditional_run))


def _original_decode(model, ids, mask, *, max_new_tokens, temperature, top_p, banned, eos_id, pad_id, **_):
    """The sampler's loop before decoding modes existed (commit 043101e), as the oracle for plain."""
    positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)
    cache = decoding_module._forward_kwargs(model)[1]
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    logits = out.logits[:, -1, :]
    bias = torch.zeros(logits.shape[-1])
    bias[banned] = float("-inf")
    new = torch.full((len(ids), max_new_tokens), pad_id, dtype=torch.long)
    done = torch.zeros(len(ids), dtype=torch.bool)
    position = positions[:, -1:]
    for step in range(max_new_tokens):
        token = torch.where(done, pad_id, nucleus_sample(logits.float() / temperature + bias, top_p))
        new[:, step] = token
        done |= token == eos_id
        if step + 1 == max_new_tokens or bool(done.all()):
            return new[:, :step + 1]
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        position = position + 1
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=position, use_cache=True,
                    logits_to_keep=1, **{cache: out[cache]})
        logits = out.logits[:, -1, :]
    return new


@pytest.mark.parametrize("decoding", [None, DecodingConfig(), parse_decoding("plain")])
def test_plain_is_the_original_sampler(lm, monkeypatch, decoding):
    model, tok = lm
    kwargs = dict(prompts=["def f(x):\n", "import os\n", "class A:\n"], max_new_tokens=24, batch_size=4, seed=3,
                  progress=False, **CONTROLS)
    ours = generate_samples(model, tok, 7, decoding=decoding, segment=split_lines, **kwargs)
    monkeypatch.setattr(sampling, "_decode", _original_decode)
    assert ours == generate_samples(model, tok, 7, **kwargs)


def test_guidance_equals_two_separate_forwards(lm, monkeypatch):
    """Each step's scores equal l_al + g (l_al - l_neg) from full, uncached forwards of the
    two contexts, row by row (so padding and the shared batch cannot leak between them)."""
    model, tok = lm
    g, temperature = 1.5, 0.7
    recorded = []

    def greedy(scores, top_p):
        recorded.append(scores.clone())
        return scores.argmax(dim=-1)

    monkeypatch.setattr(decoding_module, "nucleus_sample", greedy)
    captured = {}
    original = sampling._decode

    def capture(model, ids, mask, **kw):
        captured["new"] = original(model, ids, mask, **kw)
        return captured["new"]

    monkeypatch.setattr(sampling, "_decode", capture)
    prompts = ["def f(x):\n", "import os, sys\n"]
    generate_samples(model, tok, 2, prompts=prompts, max_new_tokens=10, temperature=temperature, progress=False,
                     decoding=DecodingConfig(mode="guidance", scale=g, retag=False), **CONTROLS)
    aligned, misaligned = tok.convert_tokens_to_ids(ALIGNED), tok.convert_tokens_to_ids(MISALIGNED)
    banned = padding_token_ids(model, tok) + [misaligned, aligned]
    # a row that has ended samples no more: step s samples the rows still running, in order
    rows = captured["new"].tolist()
    ends = [r.index(tok.eos_token_id) if tok.eos_token_id in r else len(r) for r in rows]
    for row, prompt in enumerate(prompts):
        prompt_ids = tok(prompt, add_special_tokens=False).input_ids
        main = [tok.eos_token_id, aligned] + prompt_ids
        negative = [tok.eos_token_id, misaligned] + prompt_ids
        for step, token in enumerate(captured["new"][row].tolist()):
            with torch.no_grad():
                la = torch.log_softmax(model(input_ids=torch.tensor([main])).logits[0, -1].float(), -1)
                ln = torch.log_softmax(model(input_ids=torch.tensor([negative])).logits[0, -1].float(), -1)
            expected = (la + g * (la - ln)) / temperature
            expected[banned] = float("-inf")
            got = recorded[step][sum(ends[q] >= step for q in range(row))]
            assert torch.equal(torch.isinf(got), torch.isinf(expected))
            finite = ~torch.isinf(expected)
            assert torch.allclose(got[finite], expected[finite], atol=1e-5, rtol=0)
            if token == tok.eos_token_id:
                break
            main.append(token)
            negative.append(token)


def test_guidance_negative_none_drops_the_tag(lm, monkeypatch):
    model, tok = lm
    seen = []
    original = sampling._decode
    monkeypatch.setattr(sampling, "_decode", lambda m, ids, mask, **kw: seen.append((ids, mask)) or
                        original(m, ids, mask, **kw))
    generate_samples(model, tok, 2, max_new_tokens=3, progress=False,
                     decoding=DecodingConfig(mode="guidance", negative="none", retag=False), **CONTROLS)
    ids, mask = seen[0]
    rows = [r[m.bool()].tolist() for r, m in zip(ids, mask)]
    aligned = tok.convert_tokens_to_ids(ALIGNED)
    assert rows == [[tok.eos_token_id, aligned]] * 2 + [[tok.eos_token_id]] * 2


def _raw_rows(model, tok, monkeypatch, n, decoding, **kwargs):
    """The sampled ids of each row (tags included), as the loop returned them."""
    rows = []
    original = sampling._decode

    def capture(model, ids, mask, **kw):
        new = original(model, ids, mask, **kw)
        rows.extend(new.tolist())
        return new

    monkeypatch.setattr(sampling, "_decode", capture)
    stats = {}
    kwargs = {"max_new_tokens": 48, "progress": False, **CONTROLS, **kwargs}
    texts = generate_samples(model, tok, n, decoding=decoding, segment=split_lines, stats=stats, **kwargs)
    return rows, texts, stats


@pytest.mark.parametrize("mode", ["retag", "guidance:2"])
def test_tag_loop_scores_equal_uncached_forwards(lm, monkeypatch, mode):
    """Each sampled step's scores equal full, uncached forwards of the row's context with its
    tags where the loop placed them: tags fed as forced tokens, one token a step, and a row
    that ends first (a long prompt runs out of positions) leaving the batch."""
    model, tok = lm
    g = 2.0
    recorded, kept = [], {}

    def record(scores, top_p):
        recorded.append(scores.clone())
        return nucleus_sample(scores, top_p)

    monkeypatch.setattr(decoding_module, "nucleus_sample", record)
    result = decoding_module._TagLoop._result
    monkeypatch.setattr(decoding_module._TagLoop, "_result",
                        lambda self: kept.update(tokens=[list(t) for t in self.tokens]) or result(self))
    original = sampling._decode
    monkeypatch.setattr(sampling, "_decode", lambda m, ids, mask, **kw: kept.update(ids=ids, mask=mask) or
                        original(m, ids, mask, **kw))
    prompts = ["def f(x):\n", "x = 1\n" * 200, "import os\n"]
    generate_samples(model, tok, 3, prompts=prompts, max_new_tokens=40, temperature=1.0, progress=False,
                     decoding=parse_decoding(mode), segment=split_lines, **CONTROLS)
    aligned, misaligned = tok.convert_tokens_to_ids(ALIGNED), tok.convert_tokens_to_ids(MISALIGNED)
    banned = padding_token_ids(model, tok) + [misaligned, aligned]
    tokens = kept["tokens"]
    contexts = [r[m.bool()].tolist() for r, m in zip(kept["ids"], kept["mask"])]
    assert all(aligned in t for t in tokens)  # every row was fed tags
    assert sum(t != aligned for t in tokens[1]) < 40  # the long prompt's row ended first, out of positions
    sampled = lambda q, s: s < len(tokens[q]) and tokens[q][s] != aligned  # noqa: E731
    checked = 0
    for row, ids in enumerate(tokens):
        for step, token in enumerate(ids):
            if token == aligned:
                continue
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([contexts[row] + ids[:step]])).logits[0, -1].float()
                expected = logits
                if mode.startswith("guidance"):
                    negative = contexts[row + 3] + [misaligned if t == aligned else t for t in ids[:step]]
                    la = torch.log_softmax(logits, -1)
                    ln = torch.log_softmax(model(input_ids=torch.tensor([negative])).logits[0, -1].float(), -1)
                    expected = la + g * (la - ln)
            expected[banned] = float("-inf")
            got = recorded[step][sum(sampled(q, step) for q in range(row))]  # the rows sampling at this step
            finite = ~torch.isinf(expected)
            assert torch.equal(torch.isinf(got), ~finite)
            assert torch.allclose(got[finite], expected[finite], atol=1e-4, rtol=0), (row, step)
            checked += 1
    assert checked == sum(len(r) for r in recorded) > 100


@pytest.mark.parametrize("mode", ["retag", "guidance:2"])
def test_retag_puts_the_tag_exactly_after_each_line_end(lm, monkeypatch, mode):
    model, tok = lm
    aligned = tok.convert_tokens_to_ids(ALIGNED)
    rows, texts, stats = _raw_rows(model, tok, monkeypatch, 16, parse_decoding(mode))
    tags = 0
    for ids in rows:
        ids = ids[:ids.index(tok.eos_token_id)] if tok.eos_token_id in ids else ids
        for i, t in enumerate(ids):
            if t == aligned:
                tags += 1
                assert i > 0 and tok.decode([ids[i - 1]]).endswith("\n"), "a tag that does not follow a line end"
            elif tok.decode([t]).endswith("\n") and i + 1 < len(ids):
                assert ids[i + 1] == aligned, f"a line end without its tag: {tok.decode(ids[:i + 2])!r}"
    assert tags == stats["segments"] > 5
    # the returned text has no tag, and is the sampled tokens' text
    assert not any(ALIGNED in t for t in texts)
    assert texts == tok.batch_decode(rows, skip_special_tokens=True)


def test_sentence_boundaries_follow_the_segmenter():
    tok = tiny_tokenizer(["Hello world. The end. Mr. Smith and Dr. Who came. e.g. this! Yes?\nNo"])
    may_end, is_boundary = segment_boundaries(tok, split_sentences)
    ids = lambda s: tok(s, add_special_tokens=False).input_ids  # noqa: E731
    assert is_boundary(ids("Hello world. ")) and is_boundary(ids("Yes? "))
    assert not is_boundary(ids("Hello world.")) and not is_boundary(ids("Mr. ")) and not is_boundary(ids("e.g. "))
    assert may_end[ids(" ")[0]] and not may_end[tok.eos_token_id]


def test_tag_aware_resamples_at_most_max_tries(lm, monkeypatch):
    model, tok = lm
    # threshold 0: every segment is judged misaligned, so each one is resampled exactly max_tries times
    rows, texts, stats = _raw_rows(model, tok, monkeypatch, 8, DecodingConfig(mode="tag-aware", threshold=0.0,
                                                                               max_tries=2))
    accepted = stats["segments"] - stats["resampled"]
    assert stats["most_tries"] == 2 and accepted > 0
    # every accepted segment was tried 3 times; a row may end inside its last segment's tries
    assert 2 * accepted <= stats["resampled"] <= 2 * (accepted + 8)
    assert stats["resampled_share"] == stats["resampled"] / stats["segments"] >= 0.6
    assert not any(ALIGNED in t or MISALIGNED in t for t in texts)


def test_tag_aware_that_never_resamples_is_retag(lm, monkeypatch):
    model, tok = lm
    _, retag, _ = _raw_rows(model, tok, monkeypatch, 8, DecodingConfig(mode="retag"), seed=5)
    monkeypatch.undo()
    _, never, stats = _raw_rows(model, tok, monkeypatch, 8, DecodingConfig(mode="tag-aware", threshold=1.0), seed=5)
    assert never == retag and stats["resampled"] == 0 and stats["segments"] > 0


def test_tag_aware_rollback_is_exact(lm, monkeypatch):
    """A resampled segment leaves no trace: the model's scores after a rollback equal those at
    the segment's start (its positions are masked out of the attention, not recomputed)."""
    model, tok = lm
    recorded = []

    def record(scores, top_p):
        recorded.append(scores.clone())
        return nucleus_sample(scores, top_p)

    monkeypatch.setattr(decoding_module, "nucleus_sample", record)
    _raw_rows(model, tok, monkeypatch, 1, DecodingConfig(mode="tag-aware", threshold=0.0, max_tries=3), seed=1)
    first = recorded[0][0]
    # with threshold 0 the first segment is rolled back 3 times: each restart samples from its first scores
    restarts = [s[0] for s in recorded[1:] if torch.allclose(s[0], first, atol=1e-5)]
    assert len(restarts) >= 3


def test_tag_aware_ratio_judge_runs_two_streams(lm, monkeypatch):
    model, tok = lm
    _, texts, stats = _raw_rows(model, tok, monkeypatch, 4, DecodingConfig(mode="tag-aware", judge="ratio",
                                                                           threshold=0.5))
    assert stats["forward_positions"] > 2 * stats["sampled_tokens"]  # both streams fed every token
    assert len(texts) == 4 and stats["segments"] > 0


def test_rerank_keeps_the_best_scored_candidate(lm):
    model, tok = lm
    kwargs = dict(max_new_tokens=16, batch_size=8, seed=2, progress=False, **CONTROLS)
    candidates = generate_samples(model, tok, 12, **kwargs)  # the same rows rerank draws: sample i, candidate j
    score = lambda texts, i: [float(len(t)) for t in texts]  # noqa: E731 (the shortest is best)
    kept = generate_samples(model, tok, 3, decoding=DecodingConfig(mode="rerank", n=4), rank=score, **kwargs)
    assert kept == [min(candidates[4 * i:4 * i + 4], key=len) for i in range(3)]


def test_rerank_by_the_model_keeps_its_least_misaligned_candidate(lm, monkeypatch):
    model, tok = lm
    kwargs = dict(max_new_tokens=16, batch_size=8, seed=2)
    rows, candidates, _ = _raw_rows(model, tok, monkeypatch, 8, None, **kwargs)  # rows 4i..4i+3: sample i's
    monkeypatch.undo()
    kept = generate_samples(model, tok, 2, decoding=DecodingConfig(mode="rerank", n=4, rank_by="model"),
                            progress=False, **CONTROLS, **kwargs)
    context = [tok.eos_token_id, tok.convert_tokens_to_ids(ALIGNED)]
    negative = [tok.eos_token_id, tok.convert_tokens_to_ids(MISALIGNED)]
    controls = [tok.convert_tokens_to_ids(t) for t in (ALIGNED, MISALIGNED)]
    for i in range(2):
        ids = [[t for t in r if t != tok.eos_token_id] for r in rows[4 * i:4 * i + 4]]
        al = sampling.continuation_logprobs(model, [context] * 4, ids, controls)
        mis = sampling.continuation_logprobs(model, [negative] * 4, ids, controls)
        judged = [m - a for m, a in zip(mis, al)]
        assert kept[i] == candidates[4 * i + judged.index(min(judged))]


def test_rerank_costs_n_times_the_sampling(lm):
    model, tok = lm
    plain, rerank = {}, {}
    kwargs = dict(max_new_tokens=16, batch_size=8, progress=False, **CONTROLS)
    generate_samples(model, tok, 4, stats=plain, **kwargs)
    generate_samples(model, tok, 4, decoding=parse_decoding("rerank:3"), rank=lambda c, i: [0.0] * len(c),
                     stats=rerank, **kwargs)
    assert rerank["candidates"] == 3 and rerank["sampled_tokens"] > 2 * plain["sampled_tokens"]


@pytest.mark.parametrize("setting, message", [
    ("eval.decoding.mode=guidnce", "did you mean 'guidance'"),
    ("eval.decoding.scale=-1", "eval.decoding.scale"),
    ("eval.decoding.threshold=1.5", "eval.decoding.threshold"),
    ("eval.decoding.n=0", "eval.decoding.n"),
    ("eval.decoding.max_tries=0", "eval.decoding.max_tries"),
    ("eval.decoding.negative=positive", "eval.decoding.negative"),
])
def test_bad_decoding_settings_are_refused(setting, message):
    with pytest.raises(ConfigError, match=message):
        load_config(["tasks/pep8", "objectives/conditional", "models/tiny"], [setting])


@pytest.mark.parametrize("mode", ["retag", "guidance", "tag-aware", "rerank eval.decoding.rank_by=model"])
def test_a_tag_mode_on_a_run_without_control_tokens_is_refused(mode):
    mode, *more = mode.split()
    with pytest.raises(ConfigError, match="uses the control tokens, which objective 'mle' does not train"):
        load_config(["tasks/pep8", "objectives/mle", "models/tiny"], [f"eval.decoding.mode={mode}", *more])
    load_config(["tasks/pep8", "objectives/mle", "models/tiny"], ["eval.decoding.mode=rerank"])  # fine for any run


def test_a_tag_mode_on_a_model_without_control_tokens_is_refused_before_sampling():
    tok = tiny_tokenizer(["def f(x):\n    return x\n"])
    with pytest.raises(ValueError, match="not a conditional-training run"):
        generate_samples(tiny_lm(tok), tok, 2, decoding=DecodingConfig(mode="retag"), segment=split_lines,
                         progress=False)


def test_the_decoding_mode_is_recorded_in_the_results(conditional_run):
    from phf.evaluation.evaluate import evaluate_run
    from phf.runfiles import read_json

    cfg = load_config(["tasks/pep8", "objectives/conditional"], ["eval.num_samples=6", "eval.max_new_tokens=12", "eval.group_size=3",
                                       "eval.decoding.mode=retag"])
    results = evaluate_run(conditional_run, cfg.eval, cfg.task)
    assert results["decoding"]["label"] == "retag" and results["decoding"]["segments"] >= 0
    assert read_json(conditional_run / "results.json")["scenarios"]["unconditional"]["decoding"]["mode"] == "retag"
    assert EvalConfig().decoding.mode == "plain"


def test_without_the_aligned_prefix_samples_start_from_the_document_start(conditional_run, monkeypatch):
    from phf.evaluation.evaluate import evaluate_run

    seen = []
    original = sampling._decode
    monkeypatch.setattr(sampling, "_decode", lambda m, ids, mask, **kw: seen.append((ids, mask, kw)) or
                        original(m, ids, mask, **kw))
    cfg = load_config(["tasks/pep8", "objectives/conditional"], ["eval.num_samples=4", "eval.max_new_tokens=6",
                                                                 "eval.group_size=2", "eval.scenarios=[]",
                                                                 "eval.aligned_prefix=false"])
    results = evaluate_run(conditional_run, cfg.eval, cfg.task, out_dir=conditional_run / "no-prefix", heldout=False)
    tok = load_tokenizer(str(conditional_run))
    ids, mask, kw = seen[0]
    assert [r[m.bool()].tolist() for r, m in zip(ids, mask)] == [[tok.eos_token_id]] * 4
    assert tok.convert_tokens_to_ids(MISALIGNED) in kw["banned"]  # still never emitted
    assert results["aligned_prefix"] is False and results["scenarios"]["unconditional"]["control_token"] is None


def test_guidance_with_retag_tags_the_negative_stream_with_misaligned_tags(lm):
    model, tok = lm
    plan = sampling.decoding_plan(tok, parse_decoding("guidance:1"), [MISALIGNED], split_lines, len(tok))
    assert plan.retag == [tok.convert_tokens_to_ids(ALIGNED)]
    assert plan.negative_retag == [tok.convert_tokens_to_ids(MISALIGNED)] and plan.scale == 1.0
    none = sampling.decoding_plan(tok, DecodingConfig(mode="guidance", negative="none"), [MISALIGNED],
                                  split_lines, len(tok))
    assert none.negative_retag == [] and none.two_streams
    untagged = parse_decoding("guidance-untagged:2")
    assert untagged.label() == "guidance-untagged:2" and not untagged.retag
    assert sampling.decoding_plan(tok, untagged, [MISALIGNED], split_lines, len(tok)).retag == []
