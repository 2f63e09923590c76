"""The linear probe: beats chance where the answer is in the hidden states, sits at chance
on shuffled labels, and reads the run's own held-out documents."""

import json
import random

import numpy as np

from phf.evaluation.probe import auc, fit_probe, heldout_documents, probe_run

from tiny_runs import tiny_config, train_tiny


def test_auc_counts_pairs_and_ties():
    assert auc(np.array([0.9, 0.8, 0.1]), np.array([1, 1, 0])) == 1.0
    assert auc(np.array([0.1, 0.9]), np.array([1, 0])) == 0.0
    assert auc(np.array([0.5, 0.5]), np.array([1, 0])) == 0.5


def test_probe_separates_separable_features_and_not_shuffled_ones():
    rng = np.random.default_rng(0)
    labels = (rng.random(600) < 0.2).astype(int)
    features = rng.normal(size=(600, 16))
    features[:, 3] += 3.0 * labels  # one direction holds the answer (the best AUC: 0.98)
    out = fit_probe(features, labels, seed=1)
    assert out["auc"] > 0.95 and out["accuracy"] > out["majority_accuracy"]
    assert abs(out["shuffled_auc"] - 0.5) < 0.15
    assert out["test"] + out["train"] == 600 and out["misaligned"] == labels.sum()
    noise = fit_probe(features, rng.permutation(labels), seed=1)
    assert abs(noise["auc"] - 0.5) < 0.15
    # one class too small for a split: said, not fitted
    assert fit_probe(features[:10], np.array([1] + [0] * 9))["auc"] is None


def _known_corpus(path, n_docs=160, seed=0):
    """Documents whose misaligned lines (score 0.5) are spelled with words the aligned
    lines never use."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n_docs):
            bad = [rng.random() < 0.3 for _ in range(8)]
            texts = ["zzq qqz zzq = qzq(zzq)\n" if b else f"value_{j} = compute({j}, {i % 7})\n"
                     for j, b in enumerate(bad)]
            f.write(json.dumps({"texts": texts, "scores": [0.5 if b else 0.0 for b in bad]}) + "\n")
    return path


def test_probe_on_a_trained_run_beats_chance_on_known_segments(tmp_path):
    from phf.model import load_model
    from phf.tokenizer import load_tokenizer

    scored = _known_corpus(tmp_path / "scored.jsonl")
    run = train_tiny(scored, tmp_path / "run", "mle")
    # the held-out documents are the packing's: as many as it packed, in the same order
    documents = heldout_documents(run, max_segments=10_000)
    pack = json.loads((run / "data" / "pack.json").read_text())
    assert len(documents) == pack["stats"]["documents"]["heldout"]
    model, tokenizer = load_model(str(run)), load_tokenizer(str(run))
    out = probe_run(model, tokenizer, run, threshold=0.0, max_segments=2000)
    assert out["segments"] == sum(len(t) for t, _ in documents) and 0 < out["misaligned"] < out["segments"]
    assert out["auc"] > 0.9
    assert abs(out["shuffled_auc"] - 0.5) < 0.2


def test_phf_eval_writes_the_probe_and_the_report_shows_it(tmp_path):
    from phf.evaluation.evaluate import evaluate_run
    from phf.model import load_model
    from phf.report import write_report
    from phf.tokenizer import load_tokenizer

    scored = _known_corpus(tmp_path / "scored.jsonl", n_docs=80)
    run = train_tiny(scored, tmp_path / "run", "mle")
    cfg = tiny_config(scored, run, "mle")
    results = evaluate_run(run, cfg.eval, cfg.task)
    probe = json.loads((run / "results.json").read_text())["probe"]
    assert probe == results["probe"] and probe["auc"] is not None and probe["seconds"] >= 0
    report = write_report([run], tmp_path / "report.md")
    assert "probe AUC" in report
    off = cfg.eval.model_copy(update={"probe_segments": 0})
    assert evaluate_run(run, off, cfg.task)["probe"] is None
    # the scored corpus moved away since training: the probe is skipped, the evaluation stands
    scored.rename(tmp_path / "moved.jsonl")
    assert probe_run(load_model(str(run)), load_tokenizer(str(run)), run, threshold=0.0) is None
