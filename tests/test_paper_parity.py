"""phf against the definitions of the paper's released code (docs/PARITY.md), point by point.

Expected numbers are worked out by hand from the equations (the arithmetic is in the
comments); none is copied from running the code under test.
"""

import copy
import json
import math
import random
import subprocess
import sys
from collections import Counter

import numpy as np
import pycodestyle
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from phf.config import load_config
from phf.objective_config import AWRConfig, RWRConfig, make_objective_config
from phf.data.packing import PackSpec, encode_documents, pack
from phf.records import ScoredRecord
from phf.data.scoring import ScoringSummary, score_corpus
from phf.scorers.segment import split_lines
from phf.data.transforms import keep_document
from phf.objectives import AWR, IGNORE_INDEX, Unlikelihood, objective_from_config
from phf.scorers import get_scorer
from phf.scorers.base import Scorer, document_average
from phf.tokenizer import ALIGNED
from phf.tokenizer import add_control_tokens as add_control_vocab
from phf.value_head import add_value_head, compute_values

PEP8_FILTERING = 0.002361  # the paper's PEP8 filtering threshold, on the plain mean


# --- 1. a document's score is the plain mean of its segment scores ----------------------

# line 1 "x=1\n": one violation (E225) in 4 characters -> 1/4; 99 clean 6-character lines
NEAR_THRESHOLD = "x=1\n" + "y = 2\n" * 99


def test_pep8_document_score_is_the_plain_mean_of_line_scores():
    scorer = get_scorer("pep8")
    texts, scores = scorer.score_document(NEAR_THRESHOLD)
    assert len(texts) == 100 and scores[0] == 0.25 and not any(scores[1:])
    # mean: (1/4) / 100 = 0.0025 > 0.002361; length-weighted: 1 / (4 + 99 * 6) = 1/598 = 0.001672
    assert scorer.document_score(texts, scores) == pytest.approx(0.0025)
    weighted = get_scorer("pep8", document_average="length_weighted")
    assert weighted.document_score(texts, scores) == pytest.approx(1 / 598)
    # so filtering at the paper's threshold removes this file under its definition only
    assert not keep_document(ScoredRecord(texts, scores, scorer.document_score(texts, scores)), PEP8_FILTERING)
    assert keep_document(ScoredRecord(texts, scores, weighted.document_score(texts, scores)), PEP8_FILTERING)


@pytest.mark.parametrize("name", ["pep8", "pep8-ruff"])
def test_every_pep8_scorer_defaults_to_the_mean(name):
    scorer = get_scorer(name)
    assert scorer.document_average == "mean"
    texts, scores = scorer.score_document(NEAR_THRESHOLD)
    assert scorer.document_score(texts, scores) == pytest.approx(0.0025)


class _Chars(Scorer):
    """A scorer that sets nothing about document scores: the base class's default."""

    def segment(self, text):
        return split_lines(text)

    def score_segments(self, segments):
        return [s.count("!") / len(s) for s in segments]


def test_the_scorer_default_is_the_mean():
    scorer = _Chars()
    texts, scores = scorer.score_document("a!\nbcdefghi\n")  # 1/3 and 0 over lines of 3 and 9 chars
    assert scorer.document_score(texts, scores) == pytest.approx(1 / 6)  # length-weighted: 1/12


def test_document_average_by_hand():
    segments, scores = ["ab\n", "c\n"], [0.5, 0.0]
    assert document_average(segments, scores) == 0.25  # (0.5 + 0) / 2
    assert document_average(segments, scores, "length_weighted") == pytest.approx(0.3)  # (3 * 0.5) / 5
    assert document_average([], []) == 0.0
    with pytest.raises(ValueError, match="mean, length_weighted"):
        document_average(segments, scores, "median")


def test_a_record_without_avg_score_gets_the_plain_mean():
    record = ScoredRecord.from_json({"texts": ["ab\n", "c\n", "defg\n"], "scores": [0.5, 0.0, 0.1]}, "x")
    assert record.avg_score == pytest.approx(0.2)  # (0.5 + 0 + 0.1) / 3; length-weighted: 2/10
    multi = ScoredRecord.from_json({"texts": ["ab\n", "c\n"], "scores": {"tox": [0.5, 0.0], "pii": [0.0, 0.2]}},
                                   "x")
    assert multi.avg_score == pytest.approx({"tox": 0.25, "pii": 0.1})


def test_summary_reports_what_the_filtering_threshold_removes():
    summary = ScoringSummary(document_thresholds={"filtering": PEP8_FILTERING})
    for avg in (PEP8_FILTERING, 0.0023611, 0.0, 0.01):  # exactly at the threshold: kept
        summary.add(ScoredRecord(["a\n"], [avg], avg))
    assert summary.to_dict()["removed_by_threshold"] == {
        "filtering": {"threshold": PEP8_FILTERING, "removed_documents": 2, "removed_fraction": 0.5}}
    # multi-attribute: the avg_scores combined as in training, max(0.1, 100 * 0.002) = 0.2 > 0.15
    multi = ScoringSummary(threshold={"tox": 0.5, "pii": 0.0}, document_thresholds={"filtering": 0.15},
                           combine="max", combine_weights={"pii": 100.0})
    multi.add(ScoredRecord(["a\n"], {"tox": [0.1], "pii": [0.002]}, {"tox": 0.1, "pii": 0.002}))
    multi.add(ScoredRecord(["a\n"], {"tox": [0.1], "pii": [0.0]}, {"tox": 0.1, "pii": 0.0}))
    assert multi.removed_by_threshold["filtering"]["removed_fraction"] == 0.5


def test_score_corpus_summary_with_the_pep8_task(tmp_path):
    docs = [{"text": t, "meta": {"i": i}} for i, t in enumerate([NEAR_THRESHOLD, "a = 1\n", "b = 2\n", "x=1\n"])]
    summary = score_corpus(docs, str(tmp_path / "scored.jsonl"), "pep8", num_workers=1,
                           document_thresholds={"filtering": PEP8_FILTERING})
    # NEAR_THRESHOLD (0.0025) and "x=1\n" (0.25) are above 0.002361
    assert summary.to_dict()["removed_by_threshold"]["filtering"] == {
        "threshold": PEP8_FILTERING, "removed_documents": 2, "removed_fraction": 0.5}
    records = [json.loads(line) for line in (tmp_path / "scored.jsonl").read_text().splitlines()]
    assert records[0]["avg_score"] == pytest.approx(0.0025)


# --- 2. CRLF and mixed line endings: pycodestyle's counts on the file ----------------------

def disk_counts(path, options) -> Counter:
    """{line number: violations} of pycodestyle reading the file itself."""
    class Report(pycodestyle.BaseReport):
        def __init__(self, opts):
            super().__init__(opts)
            self.found = Counter()

        def error(self, line_number, offset, text, check):
            if super().error(line_number, offset, text, check):
                self.found[line_number] += 1

    report = Report(options)
    pycodestyle.Checker(str(path), options=options, report=report).check_all()
    return report.found


def newline_line_of(text: str, universal_line: int) -> int:
    """The "\\n"-line that holds universal line `universal_line` (1-based) of `text`."""
    starts, i = [0], 0
    while i < len(text):
        if text[i] == "\r":
            i += 2 if text[i + 1:i + 2] == "\n" else 1
            starts.append(i)
        elif text[i] == "\n":
            i += 1
            starts.append(i)
        else:
            i += 1
    return text[:starts[universal_line - 1]].count("\n") + 1


def phf_counts(scorer, text: str) -> Counter:
    texts, scores = scorer.score_document(text)
    assert "".join(texts) == text
    assert len(texts) == text.count("\n") + (not text.endswith("\n"))
    return Counter({i: round(s * len(t)) for i, (t, s) in enumerate(zip(texts, scores), 1) if s})


CRLF_SNIPPETS = {
    "bare keywords": "def f(xs):\r\n    for x in xs:\r\n        if x:\r\n            continue\r\n"
                     "        raise\r\n    return\r\n",
    "violations": "import os, sys\r\nx=1 \r\ndef g():\r\n    return x\r\n\r\n\r\n",
    "no final newline": "def h():\r\n    return\r\ny=2",
    "mixed": "def f():\r\n    return\n\n\nclass A:\r\n    pass\r\n    x=1\n",
    "lone cr": "a = 1\rb=2\r\nc = 3\n\rdef f():\n    return\r",
}


@pytest.fixture(scope="module")
def pep8():
    return get_scorer("pep8")


@pytest.mark.parametrize("name", list(CRLF_SNIPPETS))
def test_per_line_counts_equal_pycodestyle_reading_the_file(name, pep8, tmp_path):
    text = CRLF_SNIPPETS[name]
    path = tmp_path / "f.py"
    path.write_bytes(text.encode())
    expected = Counter()
    for line, n in disk_counts(path, pep8._options).items():
        expected[newline_line_of(text, line)] += n
    assert phf_counts(pep8, text) == expected
    if "\r\n" in text:  # before the fix, every bare return/continue/raise got E275
        assert not [c for _, c in pep8.violations(text) if c == "E275"]


def test_crlf_stdlib_files_score_like_their_lf_originals(pep8, code_texts, tmp_path):
    """Real files with CRLF, or endings alternating CRLF/LF: counts equal pycodestyle's on
    the file, which equal the LF original's."""
    rng = random.Random(0)
    for i, lf in enumerate(code_texts[:6]):
        lines = lf.split("\n")
        for crlf in ("\r\n".join(lines), "".join(ln + rng.choice(["\n", "\r\n"]) for ln in lines[:-1]) + lines[-1]):
            path = tmp_path / f"{i}.py"
            path.write_bytes(crlf.encode())
            got = phf_counts(pep8, crlf)
            assert got == disk_counts(path, pep8._options) == phf_counts(pep8, lf)


def test_the_api_counts_are_the_command_lines(pep8, tmp_path):
    text = CRLF_SNIPPETS["bare keywords"] + CRLF_SNIPPETS["violations"]
    path = tmp_path / "cli.py"
    path.write_bytes(text.encode())
    out = subprocess.run([sys.executable, "-m", "pycodestyle", "--repeat", str(path)],
                         capture_output=True, text=True).stdout
    cli = Counter(int(line.split(":")[1]) for line in out.splitlines() if line.startswith(str(path)))
    assert cli == disk_counts(path, pep8._options) == phf_counts(pep8, text)
    assert cli  # the snippet has violations


def test_ruff_scorer_scores_crlf_like_lf():
    pytest.importorskip("ruff")
    scorer = get_scorer("pep8-ruff", continuation_lines=True)
    for text in (CRLF_SNIPPETS["bare keywords"], "x = (1,\r\n  2)\r\ndef f():\r\n    return\r\n"):
        assert phf_counts(scorer, text) == phf_counts(scorer, text.replace("\r\n", "\n"))


# --- 3, 4. unlikelihood: score weighting at threshold 0, the 1e-20 clamp --------------------

LN_075, LN_025, LN_05 = math.log(0.75), math.log(0.25), math.log(0.5)


def ul_batch(s1, s2, p_first=None):
    """Position 0 predicts label 0 with p = 3/4 (logits [ln 3, 0]), position 1 label 1
    with p = 1/2; position 2's target is ignored. s1, s2: the two targets' scores."""
    logits = torch.zeros(1, 4, 2)
    logits[0, 0, 0] = math.log(3.0) if p_first is None else p_first
    labels = torch.tensor([[1, 0, 1, IGNORE_INDEX]])
    scores = torch.tensor([[float("nan"), s1, s2, float("nan")]])  # position 0 and ignored: never read
    return logits, labels, scores


@pytest.mark.parametrize("objective, expected", [
    # score-weighted, alpha 0.5: token 1 (s = 0.2): -0.8 ln 0.75 - 0.5 * 0.2 ln 0.25 = 0.368775;
    # token 2 (s = 0): -ln 0.5 = 0.693147; mean 0.530961
    (Unlikelihood(0.0, 0.5), (-0.8 * LN_075 - 0.1 * LN_025 - LN_05) / 2),
    (Unlikelihood(0.0, 0.5, weighting="score"), (-0.8 * LN_075 - 0.1 * LN_025 - LN_05) / 2),
    # a threshold of 0 with the hard split: token 1 (0.2 > 0) -0.5 ln 0.25 = ln 2; token 2 MLE ln 2
    (Unlikelihood(0.0, 0.5, weighting="threshold"), (-0.5 * LN_025 - LN_05) / 2),
    # auto with a threshold != 0 splits; a score exactly at the threshold gets MLE
    (Unlikelihood(0.2, 0.5), (-LN_075 - LN_05) / 2),
    (Unlikelihood(0.1, 0.5), (-0.5 * LN_025 - LN_05) / 2),
], ids=["auto-0", "score", "threshold-0", "auto-at-threshold", "auto-above"])
def test_unlikelihood_by_hand(objective, expected):
    logits, labels, scores = ul_batch(0.2, 0.0)
    out = objective(logits, labels, scores)
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)


def test_unlikelihood_reference_configs_are_the_released_rules():
    for task, weighted in (("pep8", True), ("pii", True), ("toxicity", False)):
        cfg = load_config([f"tasks/{task}", f"objectives/unlikelihood-{task}"])
        threshold = cfg.task.thresholds["unlikelihood"]
        objective = objective_from_config(cfg.objective, threshold)
        assert objective.score_weighted == weighted and objective.min_one_minus_p == 1e-20, task
    assert objective_from_config(load_config(["objectives/unlikelihood-pep8"]).objective, 0.0).alpha == 0.01


def test_unlikelihood_clamp_at_p_to_1():
    # p rounds to 1 in float32 (logit gap 60): 1 - p is clamped; -ln 1e-20 = 20 ln 10 = 46.0517
    logits, labels, scores = ul_batch(1.0, 0.0, p_first=60.0)
    for clamp, term in ((1e-20, 20 * math.log(10)), (1e-5, 5 * math.log(10))):  # 46.0517, 11.5129
        x = logits.clone().requires_grad_()
        out = Unlikelihood(0.0, 1.0, min_one_minus_p=clamp)(x, labels, scores)  # s = 1: all unlikelihood
        assert out.loss.item() == pytest.approx((term - LN_05) / 2, rel=1e-6)
        out.loss.backward()
        assert not x.grad[0, 0].any()  # below the clamp: no gradient
    # 1 - p = 1e-6, between the two clamps: -ln 1e-6 = 13.8155 and a gradient under 1e-20
    # (d/dz_label of -ln(1 - p) = p, halved by the mean over 2 targets); float32 resolves
    # 1 - p only to ~1e-7 here, hence the tolerances
    gap = math.log(1e6 - 1)  # p = (1e6 - 1) / 1e6
    logits, labels, scores = ul_batch(1.0, 0.0, p_first=gap)
    x = logits.clone().requires_grad_()
    out = Unlikelihood(0.0, 1.0)(x, labels, scores)
    assert out.loss.item() == pytest.approx((6 * math.log(10) - LN_05) / 2, rel=1e-2)
    out.loss.backward()
    assert x.grad[0, 0, 0].item() == pytest.approx(0.5, rel=0.1)
    x = logits.clone().requires_grad_()
    out = Unlikelihood(0.0, 1.0, min_one_minus_p=1e-5)(x, labels, scores)
    assert out.loss.item() == pytest.approx((5 * math.log(10) - LN_05) / 2, rel=1e-6)
    out.loss.backward()
    assert not x.grad[0, 0].any()


def test_unlikelihood_ignored_labels_and_scores_above_1():
    logits, labels, scores = ul_batch(0.2, 0.0)
    everything_ignored = torch.full_like(labels, IGNORE_INDEX)
    assert Unlikelihood(0.0, 0.5)(logits, everything_ignored, scores).loss.item() == 0
    # s = 3 is weighted as s = 1 (pure unlikelihood), not as a negative MLE weight: -0.5 ln 0.25
    out = Unlikelihood(0.0, 0.5)(logits, labels, torch.tensor([[0.0, 3.0, 0.0, 0.0]]))
    assert out.loss.item() == pytest.approx((-0.5 * LN_025 - LN_05) / 2, rel=1e-6)


# --- 5, 6, 7. AWR's value head and weight clipping; RWR ---------------------------------

def tiny_gpt2():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, bos_token_id=0,
                                      eos_token_id=0))


def test_released_value_head_starts_at_minus_half_and_weights_by_hand():
    model = tiny_gpt2()
    add_value_head(model)  # the default: the released head
    input_ids = torch.tensor([[1, 2, 3]])
    out = model(input_ids, output_hidden_states=True)
    values = compute_values(model, out.hidden_states[-1])
    assert (values == -0.5).all()  # -sigmoid(0)
    # targets' scores 0.2 and 0.7, beta 1: A = -s + 0.5 -> w = e^0.3 = 1.349859, e^-0.2 = 0.818731
    scores = torch.tensor([[0.0, 0.2, 0.7]])
    stats = AWR(alpha=0.5, beta=1.0)(out.logits, input_ids, scores, values).stats
    assert stats["weight_max"] == pytest.approx(math.exp(0.3), rel=1e-6)
    assert stats["weight_min"] == pytest.approx(math.exp(-0.2), rel=1e-6)
    # value loss: mean((-0.5 + 0.2)^2, (-0.5 + 0.7)^2) = (0.09 + 0.04) / 2 = 0.065
    assert stats["value_loss"] == pytest.approx(0.065, rel=1e-6)


def test_awr_weights_clip_at_1000_by_default():
    assert AWR().max_weight == 1000 and AWRConfig().max_weight == 1000 and RWRConfig().max_weight == 1000
    logits = torch.zeros(1, 3, 2)  # p = 1/2 everywhere: -log p = ln 2
    labels, scores = torch.tensor([[0, 1, 0]]), torch.zeros(1, 3)  # targets: positions 0 and 1
    values = torch.tensor([[-1.0, -0.5, 0.0]])
    # beta 0.1: A = 0 + 1 -> e^10 = 22026 clipped to 1000; A = 0.5 -> e^5 = 148.41
    out = AWR(alpha=1.0, beta=0.1)(logits, labels, scores, values)
    assert out.stats["weight_max"] == pytest.approx(1000.0)
    assert out.loss.item() == pytest.approx((1000 + math.exp(5)) * math.log(2) / 2, rel=1e-6)
    unclipped = AWR(alpha=1.0, beta=0.1, max_weight=None)(logits, labels, scores, values)
    assert unclipped.stats["weight_max"] == pytest.approx(math.exp(10), rel=1e-5)


def test_rwr_reference_is_awr_alpha_1_with_the_head_frozen_at_minus_half():
    rwr = objective_from_config(load_config(["objectives/rwr"]).objective, 0.0)
    assert rwr.name == "rwr" and not rwr.needs_value_head and rwr.fixed_value == -0.5
    model = tiny_gpt2()
    add_value_head(model)
    input_ids = torch.tensor([[1, 2, 3, 4]])
    scores = torch.tensor([[0.0, 0.0, 0.5, 1.0]])
    out = model(input_ids, output_hidden_states=True)
    values = compute_values(model, out.hidden_states[-1])
    released = AWR(alpha=1.0, beta=10.0)(out.logits, input_ids, scores, values)  # the released RWR run
    released.loss.backward()
    assert not model.value_head.weight.grad.any()  # the head never moves: V stays -0.5
    ours = rwr(out.logits, input_ids, scores)
    torch.testing.assert_close(ours.loss, released.loss)
    # w = e^{(0.5 - s)/10}: s = 0 -> e^0.05 = 1.051271, s = 1 -> e^-0.05 = 0.951229
    assert ours.stats["weight_max"] == pytest.approx(math.exp(0.05), rel=1e-6)
    assert ours.stats["weight_min"] == pytest.approx(math.exp(-0.05), rel=1e-6)
    assert objective_from_config(make_objective_config(name="rwr"), 0.0).fixed_value is None  # V = 0 remains


# --- 8. drop_token_fraction ---------------------------------------------------------------

@pytest.mark.parametrize("files, expected", [
    (["tasks/pep8", "objectives/conditional"], 0.1),
    (["objectives/conditional", "tasks/pep8"], 0.1),
    (["tasks/pep8", "objectives/conditional", "objective.drop_token_fraction=0.3"], 0.3),  # the objective's own
    (["tasks/toxicity", "objectives/conditional"], 0.01),
    (["tasks/pii", "objectives/conditional"], 0.01),
])
def test_drop_token_fraction_of_the_released_configs(files, expected):
    configs, overrides = [f for f in files if "=" not in f], [f for f in files if "=" in f]
    assert load_config(configs, overrides).drop_token_fraction == expected


# --- 9. EOS opens each document, with the first segment's score ---------------------------

def test_eos_opens_each_document_with_its_first_segments_score(tiny_tokenizer, tmp_path):
    docs = [(["a = 1\n", "b=2\n"], [0.3, 0.7]), (["", "c = 3\n"], [0.9, 0.1]), (["d\n"], [0.0])]
    records = [ScoredRecord(t, s, 0.0) for t, s in docs]
    eos = tiny_tokenizer.eos_token_id
    ids, scores = [], []
    for (t, s), (doc_ids, doc_scores) in zip(docs, encode_documents(tiny_tokenizer, docs)):
        ids += [eos, *doc_ids.tolist()]
        scores += [s[0], *doc_scores.tolist()]  # EOS: the first segment's score, even an empty one's
    block = 4
    pack(records, tiny_tokenizer, PackSpec(block_size=block, heldout_fraction=0.0), tmp_path)
    got_ids = np.fromfile(tmp_path / "train.ids", dtype=np.uint32).tolist()
    got_scores = np.fromfile(tmp_path / "train.scores", dtype=np.float32)
    n = len(ids) // block * block
    assert got_ids == ids[:n] and got_ids[0] == eos
    np.testing.assert_array_equal(got_scores, np.float32(scores[:n]))
    assert got_scores[0] == np.float32(0.3) and np.float32(0.9) in got_scores


def test_eos_precedes_the_control_token(tiny_tokenizer, tmp_path):
    tok = copy.deepcopy(tiny_tokenizer)
    add_control_vocab(tok)
    records = [ScoredRecord(["a = 1\n", "b=2\n"], [0.0, 0.5], 0.25)] * 4
    pack(records, tok, PackSpec(block_size=8, objective="conditional", heldout_fraction=0.0), tmp_path)
    ids = np.fromfile(tmp_path / "train.ids", dtype=np.uint32)
    assert ids[0] == tok.eos_token_id and ids[1] == tok.convert_tokens_to_ids(ALIGNED)


# --- the new options are checked with the config ------------------------------------------

@pytest.mark.parametrize("override, key", [
    ("objective.weighting=soft", "objective.weighting"),
    ("objective.value_head=tanh", "objective.value_head"),
    ("objective.min_one_minus_p=0", "objective.min_one_minus_p"),
])
def test_bad_parity_options_are_config_errors(override, key):
    from phf.config import ConfigError

    with pytest.raises(ConfigError, match=key):
        load_config(["objectives/unlikelihood"], [override])
