"""`phf sweep --decoding`: the trained runs evaluated again under each mode, nothing trained
again, tag modes on conditional runs only, a table with model-only decoding apart from
decoding that calls the scorer."""

import json

import pytest
from tiny_runs import tiny

from phf.cli import main
from phf.decode_sweep import load_rows, parse_decodings
from phf.errors import ConfigError

TINY = tiny({"model.config_overrides": "{n_layer: 1, n_embd: 32, n_head: 2}", "training.block_size": 32,
             "training.effective_batch_size": 4, "training.num_tokens": 512, "eval.num_samples": 6,
             "eval.max_new_tokens": 8, "eval.group_size": 3, "eval.heldout_max_tokens": 500,
             "data.max_bytes": 60000, "eval.scenarios": "[]"})


@pytest.mark.slow
def test_decoding_sweep_evaluates_every_mode_once_without_training(tmp_path, monkeypatch):
    import phf.sweep

    args = ["sweep", "--task", "pep8", "--objectives", "mle,conditional", "--finetune", "none", "--seeds", "42,43",
            "--out", str(tmp_path), "--decoding", "plain,retag,guidance:1,guidance:3,rerank:2", *TINY]
    assert main(args) == 0
    rows = load_rows(tmp_path)
    modes = {(r["run"], r["mode"]) for r in rows}
    # tag modes on the conditional run only; plain and rerank by the scorer on both
    assert modes == {("mle", "plain"), ("mle", "rerank:2"), ("conditional", "plain"), ("conditional", "retag"),
                     ("conditional", "guidance:1"), ("conditional", "guidance:3"), ("conditional", "rerank:2")}
    assert len(rows) == 2 * len(modes)  # every mode at both seeds
    results = json.loads((tmp_path / "conditional/seed-43/decoding/guidance_3/results.json").read_text())
    assert results["decoding"]["scale"] == 3.0 and results["kl"] is None
    assert results["samples_nll_reference"]["reference"].endswith("mle/seed-43")  # the same seed's MLE run
    rerank = next(r for r in rows if r["mode"] == "rerank:2" and r["run"] == "mle")
    plain = next(r for r in rows if r["mode"] == "plain" and r["run"] == "mle" and r["seed"] == rerank["seed"])
    assert rerank["tokens_per_sample"] > plain["tokens_per_sample"]
    md = (tmp_path / "decoding.md").read_text()
    model_only, scorer = md.split("### Decoding that calls the scorer")
    assert "| conditional | guidance:3 |" in model_only and "rerank:2" not in model_only
    assert "| mle | rerank:2 |" in scorer and (tmp_path / "decoding_guidance.png").stat().st_size > 0

    # again: nothing trained, nothing evaluated
    monkeypatch.setattr(phf.sweep, "train", lambda *a, **k: pytest.fail("trained again"))
    monkeypatch.setattr("phf.decode_sweep.evaluate_run", lambda *a, **k: pytest.fail("evaluated again"))
    assert main(args) == 0


def test_decoding_modes_are_checked_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'guidance'"):
        parse_decodings("plain,guidnce:2")
    with pytest.raises(ValueError, match="named twice"):
        parse_decodings("rerank:4,rerank:4")
    assert main(["sweep", "--out", str(tmp_path / "s"), "--decoding", "tag-aware:7", *TINY]) == 2
    assert not (tmp_path / "s" / "scored.jsonl").exists()
