"""The sweep: every objective plus the finetuning row, resumable."""

import json
from pathlib import Path

import pytest
from tiny_runs import tiny

from phf.sweep import ALL_OBJECTIVES, objective_config, plan, run_sweep

TINY = tiny({"model.config_overrides": "{n_layer: 1, n_embd: 32, n_head: 2}", "training.block_size": 32,
             "training.effective_batch_size": 4, "training.num_tokens": 512, "eval.num_samples": 6,
             "eval.max_new_tokens": 8, "eval.group_size": 3, "eval.heldout_max_tokens": 500,
             "data.max_bytes": 60000})


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


def test_parse_seeds():
    from phf.sweep import parse_seeds

    assert parse_seeds("3", 42) == [42, 43, 44]
    assert parse_seeds("1,2,3", 42) == [1, 2, 3]
    assert parse_seeds("7,", 42) == [7]
    for bad in ("0", "x", "1,1", ","):
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds(bad, 42)


def test_seeds_share_heldout_documents_and_a_one_seed_sweep_is_taken_over(tmp_path, monkeypatch):
    import phf.sweep

    objectives = ("mle", "conditional")
    run_sweep("pep8", tmp_path, objectives=objectives, overrides=TINY)  # today's layout: out/<run>, seed 42
    assert (tmp_path / "mle" / "results.json").exists() and not list(tmp_path.glob("*/seed-*"))
    # a run evaluated before its sweep measured KL gets it added, without training or sampling again
    cond = tmp_path / "conditional" / "results.json"
    old = json.loads(cond.read_text())
    assert old["kl"] is not None and old["misalignment_ci"][0] <= old["misalignment"] <= old["misalignment_ci"][1]
    cond.write_text(json.dumps({**old, "kl": None, "kl_details": None, "misalignment": 123.0}))

    trained = []
    real_train = phf.sweep.train
    monkeypatch.setattr(phf.sweep, "train", lambda cfg, **k: trained.append(cfg) or real_train(cfg, **k))
    report = run_sweep("pep8", tmp_path, objectives=objectives, finetune="conditional", overrides=TINY,
                       seeds=[42, 7])
    # seed 42 of mle and conditional is the one-seed sweep's; everything else is new, one folder per seed
    assert sorted(str(Path(c.training.output_dir).relative_to(tmp_path)) for c in trained) == sorted([
        "mle/seed-7", "conditional/seed-7", "mle-50pct/seed-42", "mle-50pct/seed-7",
        "mle+conditional-finetune/seed-42", "mle+conditional-finetune/seed-7"])
    assert all(c.data.heldout_seed == 42 and c.eval.seed == c.training.seed for c in trained)
    cond_results = json.loads(cond.read_text())
    assert cond_results["misalignment"] == 123.0 and cond_results["kl"] is not None  # KL added, not re-evaluated
    # the same held-out documents at every seed (the tokenizer is shared, so the same ids)
    assert (tmp_path / "mle" / "data" / "heldout.ids").read_bytes() == \
        (tmp_path / "mle" / "seed-7" / "data" / "heldout.ids").read_bytes()
    # ... while the seed changes the control-token drops of conditional training
    assert (tmp_path / "conditional" / "data" / "train.ids").read_bytes() != \
        (tmp_path / "conditional" / "seed-7" / "data" / "train.ids").read_bytes()
    # finetuning starts from the MLE run of its own seed; KL is measured against that seed's MLE
    for seed in (42, 7):
        ft = json.loads((tmp_path / "mle+conditional-finetune" / f"seed-{seed}" / "train_summary.json").read_text())
        assert ft["started_from"] == str(tmp_path / "mle-50pct" / f"seed-{seed}")
    mle7 = json.loads((tmp_path / "mle" / "seed-7" / "results.json").read_text())
    cond7 = json.loads((tmp_path / "conditional" / "seed-7" / "results.json").read_text())
    assert mle7["kl"] == 0.0 and mle7["run"] == "mle" and mle7["seed"] == 7
    assert cond7["kl_details"]["reference"] == str(tmp_path / "mle" / "seed-7")
    # the report groups the seeds: one row per run, n = 2, mean ± half-width
    row = next(line for line in report.splitlines() if line.startswith("| conditional | conditional |"))
    assert "| 2 |" in row and row.count("±") >= 4
    assert "## Differences from MLE" in report and "paired t" in report
    assert (tmp_path / "report_figures" / "pareto_kl.png").exists()

    monkeypatch.setattr(phf.train, "train", lambda *a, **k: pytest.fail("finished (run, seed) pairs are skipped"))
    run_sweep("pep8", tmp_path, objectives=objectives, finetune="conditional", overrides=TINY, seeds=[42, 7])


def test_cli_seeds_count_starts_at_the_configured_seed(tmp_path):
    from phf.cli import _sweep_seeds, build_parser

    args = build_parser().parse_args(["sweep", "--seeds", "3", "--out", str(tmp_path), "training.seed=5"])
    assert _sweep_seeds(args, args.task) == [5, 6, 7]
    args = build_parser().parse_args(["demo", "--seeds", "1,2"])
    assert _sweep_seeds(args, args.task) == [1, 2]
    assert _sweep_seeds(build_parser().parse_args(["sweep"]), "pep8") is None


def test_phf_sweep_samples_more_than_the_demo(tmp_path):
    from phf.sweep import SWEEP_CONFIGS, SweepRun, run_config

    mle = SweepRun("mle", "mle")
    assert run_config("pep8", tmp_path, mle).eval.num_samples == 250
    assert run_config("pep8", tmp_path, mle, extra_configs=SWEEP_CONFIGS).eval.num_samples == 1000
    # overrides still win
    assert run_config("pep8", tmp_path, mle, ["eval.num_samples=64"], extra_configs=SWEEP_CONFIGS).eval.num_samples == 64
