"""The training-time evaluation: when it runs, and what it writes to metrics.jsonl."""

import json
from types import SimpleNamespace

import pytest
from tiny_runs import scored_corpus, train_tiny

from phf.evaluation.callback import EvalCallback, add_eval_callback, eval_interval, eval_steps
from phf.evaluation.config import EvalConfig
from phf.scorers.config import TaskConfig


@pytest.mark.parametrize("every, max_steps, expected", [
    (0.25, 196, [0, 49, 98, 147, 196]),  # the default on the demo's ~200 steps: 5 points
    (0.2, 196, [0, 40, 80, 120, 160, 196]),
    (40, 100, [0, 40, 80, 100]),
    (2, 6, [0, 2, 4, 6]),
    (0.5, 3, [0, 2, 3]),
    (0.01, 10, list(range(11))),  # a fraction never rounds down to "every 0 steps"
    (0, 100, []),
])
def test_eval_schedule_known_answers(every, max_steps, expected):
    assert eval_steps(every, max_steps) == expected


def test_eval_schedule_on_resume():
    assert eval_interval(0.2, 196) == 40
    assert eval_steps(0.2, 196, start=50) == [50, 80, 120, 160, 196]


def test_no_callback_when_turned_off():
    e = EvalConfig(every_steps=0)
    assert add_eval_callback(trainer=None, e=e, task=TaskConfig(), tokenizer=None, run_dir=".") is None


def test_a_resumed_run_does_not_repeat_the_point_it_stopped_at():
    callback = EvalCallback(trainer=None, e=EvalConfig(every_steps=10), task=TaskConfig(), tokenizer=None, run_dir=".")
    state = SimpleNamespace(global_step=20, max_steps=50, log_history=[{"step": 20, "eval/misalignment": 0.1}])
    assert not callback._due_at_start(state)
    state.log_history = [{"step": 20, "loss": 3.0}]
    assert callback._due_at_start(state)


@pytest.fixture(scope="module")
def run(tmp_path_factory, code_texts):
    root = tmp_path_factory.mktemp("callback")
    scored = scored_corpus(root / "scored.jsonl", code_texts)
    # 3072 tokens / (8 x 64) = 6 steps; evaluations every 2 steps
    return train_tiny(scored, root / "run", "conditional", ["eval.every_steps=2"])


def test_curves_land_in_metrics_jsonl(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/misalignment" in r]
    assert [r["step"] for r in evals] == eval_steps(2, 6) == [0, 2, 4, 6]
    for r in evals:
        assert r["tokens_seen"] == r["step"] * 8 * 64
        assert r["eval/misalignment"] >= 0 and 0 <= r["eval/hit_rate"] <= 1
        assert 0 < r["eval/heldout_loss"] < 10  # ln(300 + 2 tokens) is 5.7 for a random model
    # the held-out loss goes down as the model trains
    assert evals[-1]["eval/heldout_loss"] < evals[0]["eval/heldout_loss"]
    # the training-loss logs due at the same steps are still written (logging_steps=2)
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 4, 6]


def test_training_still_saves_a_model_that_evaluates(run):
    assert (run / "model.safetensors").exists() and (run / "train_summary.json").exists()
