"""The sweep: every objective plus the finetuning row, resumable."""

import json

from phf.sweep import ALL_OBJECTIVES, objective_config, plan, run_sweep

TINY = ["model.config_overrides={n_layer: 1, n_embd: 32, n_head: 2}", "tokenizer.vocab_size=300",
        "training.block_size=32", "training.per_device_batch_size=4", "training.effective_batch_size=4",
        "training.num_tokens=512", "training.report_to=[]", "eval.num_samples=6", "eval.max_new_tokens=16",
        "eval.group_size=3", "eval.heldout_max_tokens=500", "data.max_bytes=60000", "data.heldout_fraction=0.2"]


def test_plan_gives_the_finetuning_row_the_same_total_budget():
    runs = plan(ALL_OBJECTIVES, finetune="conditional", finetune_fraction=0.25)
    assert [r.name for r in runs][:6] == list(ALL_OBJECTIVES)
    pre, ft = runs[-2], runs[-1]
    assert pre.objective == "mle" and ft.objective == "conditional" and ft.start_from == pre.name
    assert pre.budget_fraction + ft.budget_fraction == 1.0


def test_task_specific_objective_configs_are_preferred():
    assert objective_config("awr", "pep8") == "objectives/awr-pep8"
    assert objective_config("rwr", "pep8") == "objectives/rwr"
    assert objective_config("awr", "toxicity-demo") == "objectives/awr-toxicity"


def test_sweep_runs_every_objective_and_skips_finished_runs(tmp_path, monkeypatch):
    report = run_sweep("pep8", tmp_path, objectives=ALL_OBJECTIVES, finetune="conditional", overrides=TINY)
    names = [*ALL_OBJECTIVES, "mle-50pct", "mle+conditional-finetune"]
    for name in names:
        results = json.loads((tmp_path / name / "results.json").read_text())
        assert results["heldout_loss"] > 0
        assert f"| {name} |" in report
    ft = json.loads((tmp_path / "mle+conditional-finetune" / "train_summary.json").read_text())
    pre = json.loads((tmp_path / "mle-50pct" / "train_summary.json").read_text())
    full = json.loads((tmp_path / "mle" / "train_summary.json").read_text())
    assert ft["started_from"] == str(tmp_path / "mle-50pct")
    assert ft["control_tokens_added"] == 2
    assert ft["tokens_seen"] + pre["tokens_seen"] == full["tokens_seen"]
    # the scored corpus keeps its sidecars under its own name, as `phf score` leaves them
    assert not list(tmp_path.glob("*.partial.*")) and (tmp_path / "scored.jsonl.state.json").exists()
    rows = [json.loads(x) for x in (tmp_path / "awr" / "metrics.jsonl").read_text().splitlines()]
    awr = next(r for r in rows if "loss" in r)
    assert "objective/value_loss" in awr and "objective/weight_mean" in awr

    # a rerun trains and evaluates nothing
    import phf.train

    def fail(*a, **k):
        raise AssertionError("finished runs must be skipped")

    monkeypatch.setattr(phf.train, "train", fail)
    run_sweep("pep8", tmp_path, objectives=ALL_OBJECTIVES, finetune="conditional", overrides=TINY)
