"""A tiny run through the whole pipeline, through the command line:
score -> train (MLE and conditional) -> eval -> report."""

import json
import subprocess
import sys

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from tiny_runs import tiny

from phf.cli import main

TINY = tiny({"training.num_tokens": 2048, "training.logging_steps": 1, "eval.max_new_tokens": 24,
             "eval.heldout_max_tokens": 2000, "data.heldout_fraction": 0.1})


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "scored.jsonl"
    code = main(["score", "tasks/pep8", "data.max_bytes=150000", f"data.scored_path={out}", "--workers", "2"])
    assert code == 0
    return out


def test_score_writes_records_that_join_to_the_files(scored):
    records = [json.loads(line) for line in scored.read_text().splitlines()]
    assert len(records) >= 3
    for r in records:
        assert len(r["texts"]) == len(r["scores"])
        with open(r["meta"]["path"], encoding="utf-8", newline="") as f:
            assert "".join(r["texts"]) == f.read()
    summary = json.loads((scored.parent / "scored.jsonl.summary.json").read_text())
    assert summary["documents"] == len(records)
    assert 0 < summary["misaligned_fraction"] < 1


@pytest.mark.parametrize("objective", ["mle", "conditional"])
def test_train_eval_report(scored, tmp_path, objective):
    run = tmp_path / objective
    args = ["tasks/pep8", f"objectives/{objective}", "models/tiny", *TINY,
            f"data.scored_path={scored}", f"training.output_dir={run}"]
    assert main(["train", *args]) == 0
    # a Hugging Face model directory: reloads with the Auto classes
    model = AutoModelForCausalLM.from_pretrained(run)
    tok = AutoTokenizer.from_pretrained(run)
    # the embedding matrix: the tokenizer's rows, padded to a multiple of 64
    rows = model.get_input_embeddings().weight.shape[0]
    assert rows % 64 == 0 and len(tok) <= rows < len(tok) + 64
    assert ("<|aligned|>" in tok.get_vocab()) == (objective == "conditional")
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["tokens_seen"] >= 2048 and summary["objective"] == objective
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [m for m in metrics if "loss" in m]
    assert losses and losses[0]["tokens_seen"] > 0

    assert main(["eval", str(run)]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["scenarios"]["unconditional"]["num_samples"] == 10
    assert results["misalignment"] >= 0 and results["heldout_loss"] > 0
    samples = [json.loads(x) for x in (run / "samples" / "unconditional.jsonl").read_text().splitlines()]
    assert len(samples) == 10
    assert not any("<|aligned|>" in s["text"] or "<|misaligned|>" in s["text"] for s in samples)

    report = tmp_path / "report.md"
    assert main(["report", str(run), "-o", str(report)]) == 0
    assert f"| {objective} |" in report.read_text()


def test_cli_help_explains_every_command():
    out = subprocess.run([sys.executable, "-m", "phf.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("score", "train", "eval", "report", "demo"):
        assert command in out.stdout
    for command in ("score", "train", "eval", "report", "demo"):
        sub = subprocess.run([sys.executable, "-m", "phf.cli", command, "--help"],
                             capture_output=True, text=True, check=True)
        assert "usage: phf " + command in sub.stdout


def test_cli_reports_config_errors_without_a_traceback(capsys):
    assert main(["train", "tasks/pep8", "training.learning_rat=1"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'training.learning_rate'" in err and "Traceback" not in err
