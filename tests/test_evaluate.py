"""`phf eval` and `phf redteam` on tiny trained runs: scenarios, KL, lm-eval, red teaming."""

import json
import sys

import pytest
from tiny_runs import scored_corpus, tiny_config, train_tiny

from phf.cli import main
from phf.evaluation import lm_eval_hook
from phf.evaluation.evaluate import evaluate_run, red_team_run, spread_blocks
from phf.scorers import get_scorer

FAST = ["eval.every_steps=0"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, code_texts):
    root = tmp_path_factory.mktemp("evaluate")
    scored = scored_corpus(root / "scored.jsonl", code_texts)
    return {"scored": scored, **{o: train_tiny(scored, root / o, o, FAST) for o in ("mle", "conditional")}}


def _sections(cfg):
    return cfg.eval, cfg.task


def _cfg(runs, objective, extra=()):
    return tiny_config(runs["scored"], runs[objective], objective, [*FAST, *extra])


def test_evaluate_writes_every_scenario_and_the_kl(runs):
    run = runs["conditional"]
    results = evaluate_run(run, *_sections(_cfg(runs, "conditional")), kl_reference=runs["mle"])
    assert results == json.loads((run / "results.json").read_text())
    # the top-level keys the demo and the report read
    for key in ("misalignment", "expected_max", "hit_rate", "heldout_loss", "kl"):
        assert isinstance(results[key], float), key
    assert set(results["scenarios"]) == {"unconditional", "functions"}
    assert results["misalignment"] == results["scenarios"]["unconditional"]["misalignment"]
    functions = results["scenarios"]["functions"]
    assert functions["num_samples"] == 10 and functions["score_with_prompt"] and functions["num_prompts"] >= 40
    for key in ("distinct_1", "distinct_2", "entropy_2", "mean_length"):
        assert key in functions

    pep8 = get_scorer("pep8")
    rows = [json.loads(x) for x in (run / "samples" / "functions.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and all(r["prompt"].startswith(("def", "class", "async")) for r in rows)
    # scored together with the prompt, as the scenario says
    assert [r["score"] for r in rows] == pytest.approx(pep8.score_texts([r["prompt"] + r["text"] for r in rows]))
    assert not any("<|" in r["text"] for r in rows)
    unconditional = [json.loads(x) for x in (run / "samples" / "unconditional.jsonl").read_text().splitlines()]
    assert [r["score"] for r in unconditional] == pytest.approx(pep8.score_texts([r["text"] for r in unconditional]))

    details = results["kl_details"]
    assert details["reference"] == str(runs["mle"]) and details["num_samples"] == 6
    assert results["kl"] == details["kl"] and details["kl_stderr"] >= 0


def test_kl_reference_samples_are_cached_and_the_reference_has_kl_zero(runs):
    cfg = _cfg(runs, "conditional", ["eval.num_samples=5", "eval.scenarios=[]"])
    first = evaluate_run(runs["conditional"], *_sections(cfg), kl_reference=runs["mle"])
    second = evaluate_run(runs["conditional"], *_sections(cfg), kl_reference=runs["mle"])
    assert second["kl_details"]["cached"] and second["kl"] == first["kl"]
    assert len(list((runs["mle"] / ".phf_kl_samples").glob("*.jsonl"))) == 1
    own = evaluate_run(runs["mle"], *_sections(_cfg(runs, "mle", ["eval.num_samples=5"])), kl_reference=runs["mle"])
    assert own["kl"] == 0.0 and own["kl_details"]["note"] == "this run is the reference"
    # through the config instead of the argument
    via_config = evaluate_run(runs["mle"], *_sections(_cfg(runs, "mle", ["eval.num_samples=5",
                                                              f"eval.kl_reference={runs['mle']}"])))
    assert via_config["kl"] == 0.0


def test_eval_cli_with_kl_reference(runs, capsys):
    assert main(["eval", str(runs["conditional"]), "eval.num_samples=5", "eval.scenarios=[]",
                 "--kl-reference", str(runs["mle"])]) == 0
    results = json.loads((runs["conditional"] / "results.json").read_text())
    assert isinstance(results["kl"], float) and set(results["scenarios"]) == {"unconditional"}


def test_lm_eval_missing_fails_before_sampling(runs, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    samples = runs["mle"] / "samples" / "unconditional.jsonl"
    before = samples.exists() and samples.stat().st_mtime_ns
    assert main(["eval", str(runs["mle"]), "--lm-eval-tasks", "hellaswag"]) == 2
    assert "pip install" in capsys.readouterr().err
    assert (samples.exists() and samples.stat().st_mtime_ns) == before


def test_lm_eval_results_go_into_results_json(runs, monkeypatch):
    calls = []

    def fake_run_lm_eval(model_dir, tasks, **kwargs):
        calls.append((str(model_dir), list(tasks), kwargs))
        return {t: {"acc": 0.5, "acc_stderr": 0.1} for t in tasks}

    monkeypatch.setattr(lm_eval_hook, "lm_eval_available", lambda: True)
    monkeypatch.setattr(lm_eval_hook, "run_lm_eval", fake_run_lm_eval)
    assert main(["eval", str(runs["mle"]), "eval.num_samples=5", "eval.scenarios=[]",
                 "--lm-eval-tasks", "arc_easy,piqa", "--lm-eval-limit", "7"]) == 0
    assert calls == [(str(runs["mle"]), ["arc_easy", "piqa"], {"limit": 7, "seed": 0})]
    results = json.loads((runs["mle"] / "results.json").read_text())
    assert results["lm_eval"] == {"arc_easy": {"acc": 0.5, "acc_stderr": 0.1}, "piqa": {"acc": 0.5, "acc_stderr": 0.1}}


def test_red_team_through_the_cli(runs, capsys):
    run = runs["conditional"]
    assert main(["redteam", str(run), "eval.red_team={red_max_new_tokens: 8, num_fewshot: 2}",
                 "--red-lm", str(runs["mle"]), "--rounds", "2", "--new-prompts", "3", "--pool-size", "60"]) == 0
    assert "round 2: expected max" in capsys.readouterr().out
    report = json.loads((run / "redteam.json").read_text())
    assert [r["round"] for r in report["rounds"]] == [0, 1, 2]
    assert report["config"]["pool_size"] == 60 and report["config"]["num_fewshot"] == 2
    # seeded from the first scenario (PEP8 functions), scored with the prompt like it
    assert report["config"]["score_with_prompt"] and report["prompts_file"] == "prompts/pep8_functions.jsonl"
    assert report["config"]["fewshot_temperature"] == 0.01  # from tasks/pep8.yaml
    summary = json.loads((run / "results.json").read_text())["red_team"]
    assert summary["expected_max"] == [r["expected_max"] for r in report["rounds"]]
    # a later `phf eval` keeps the red-teaming summary
    evaluate_run(run, *_sections(_cfg(runs, "conditional", ["eval.num_samples=5", "eval.scenarios=[]"])))
    assert json.loads((run / "results.json").read_text())["red_team"] == summary


def test_red_team_needs_a_red_lm(runs):
    with pytest.raises(ValueError, match="--red-lm"):
        red_team_run(runs["mle"], *_sections(_cfg(runs, "mle")))


@pytest.mark.parametrize("total, wanted, expected", [
    (10, 3, [0, 4, 9]),  # first, middle, last: not just the first documents of the corpus
    (10, None, list(range(10))),
    (4, 8, [0, 1, 2, 3]),
    (10, 1, [0]),
    (10, 0, []),
])
def test_spread_blocks_known_answers(total, wanted, expected):
    assert spread_blocks(total, wanted) == expected
