"""Prompted scenarios: the prompt files, where the control token goes, what is scored."""

import ast
import json
import re

import pytest
from tiny_runs import tiny_lm, tiny_tokenizer

from phf.config import ConfigError, EvalConfig, load_config
from phf.evaluation.config import ScenarioConfig
from phf.evaluation.scenarios import (
    conditioning,
    fit_new_tokens,
    generation_inputs,
    load_prompts,
    run_scenario,
    scenarios_from_config,
)
from phf.scorers import get_scorer
from phf.scorers.base import Scorer
from phf.tokenizer import ALIGNED, MISALIGNED

CORPUS = ["def add(a, b):\n    return a + b\n", "import os\nprint(os.getcwd())\n",
          "class Point:\n    def __init__(self, x):\n        self.x = x\n"] * 20


def test_builtin_pep8_prompts_are_clean_function_signatures():
    prompts = load_prompts("prompts/pep8_functions.jsonl")
    assert len(prompts) >= 40 and len(set(prompts)) == len(prompts)
    pep8 = get_scorer("pep8")
    for p in prompts:
        assert p.endswith(":\n")
        body = " " * (8 if p.startswith("class") else 4) + "pass\n"
        ast.parse(p + body)  # a signature, completed by any body, is valid Python
        # ... and PEP8-clean: the violations in a sample are the model's
        assert pep8.score_texts([p + body]) == [0.0], p


def test_load_prompts_names_the_bad_line(tmp_path):
    good = tmp_path / "p.jsonl"
    good.write_text('{"prompt": "a"}\n\n{"prompt": "b", "extra": 1}\n')
    assert load_prompts(good) == ["a", "b"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n{"text": "b"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: expected"):
        load_prompts(bad)
    bad.write_text('{"prompt": "a"}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not JSON"):
        load_prompts(bad)
    bad.write_text("\n")
    with pytest.raises(ValueError, match="no prompts"):
        load_prompts(bad)


def test_generation_inputs_place_the_control_token():
    controls = {"prefix_text": ALIGNED, "forbidden_texts": [MISALIGNED]}
    before = generation_inputs(ScenarioConfig(name="s", prompts_file="f", control_position="before"), ["def f():\n"], controls)
    assert before == {"prompts": ["def f():\n"], "prefix_text": ALIGNED, "forbidden_texts": [MISALIGNED]}
    after = generation_inputs(ScenarioConfig(name="s", prompts_file="f", control_position="after"), ["def f():\n"], controls)
    assert after == {"prompts": ["def f():\n" + ALIGNED], "prefix_text": "", "forbidden_texts": [MISALIGNED]}
    plain = generation_inputs(ScenarioConfig(name="s", prompts_file="f", control_position="after"), ["x"], {"prefix_text": "", "forbidden_texts": []})
    assert plain["prompts"] == ["x"] and plain["prefix_text"] == ""
    assert generation_inputs(ScenarioConfig(name="unconditional"), None, controls)["prompts"] is None


class RecordingScorer(Scorer):
    """Scores a text by its length and remembers what it was given."""

    def __init__(self):
        self.seen = []

    def segment(self, text):
        return [text]

    def score_segments(self, segments):
        self.seen.extend(segments)
        return [float(len(s)) for s in segments]


@pytest.fixture(scope="module")
def conditional_lm():
    tok = tiny_tokenizer(CORPUS, control_tokens=True)
    return tiny_lm(tok, n_positions=64), tok


def _capture_inputs(model, monkeypatch):
    """The batches the sampler decodes (its real decoding still runs)."""
    from phf.evaluation import sampling

    calls = []
    original = sampling._decode

    def decode(model, ids, mask, **kwargs):
        calls.append({"input_ids": ids, "attention_mask": mask, **kwargs})
        return original(model, ids, mask, **kwargs)

    monkeypatch.setattr(sampling, "_decode", decode)
    return calls


@pytest.mark.parametrize("position", ["before", "after"])
def test_control_token_goes_where_the_scenario_says(conditional_lm, tmp_path, monkeypatch, position):
    model, tok = conditional_lm
    prompts = ["def add(a, b):\n", "import os\n"]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    calls = _capture_inputs(model, monkeypatch)
    scorer = RecordingScorer()
    e = EvalConfig(num_samples=4, max_new_tokens=6, batch_size=4, group_size=2)
    scenario = ScenarioConfig(name="s", prompts_file=str(path), control_position=position, score_with_prompt=True)
    rows, summary = run_scenario(model, tok, scorer, scenario, e, 0.0, conditioning(tok), progress=False)

    aligned = tok.convert_tokens_to_ids(ALIGNED)
    misaligned = tok.convert_tokens_to_ids(MISALIGNED)
    (call,) = calls
    assert misaligned in call["banned"] and aligned not in call["banned"]
    for i, row in enumerate(call["input_ids"].tolist()):
        row = row[call["attention_mask"][i].tolist().index(1):]  # drop the left padding
        prompt_ids = tok(prompts[i % 2], add_special_tokens=False).input_ids
        if position == "before":
            assert row == [tok.eos_token_id, aligned] + prompt_ids
        else:
            assert row == [tok.eos_token_id] + prompt_ids + [aligned]
    # rows keep the prompt as written; the scorer saw prompt + continuation
    assert [r["prompt"] for r in rows] == prompts * 2
    assert scorer.seen == [r["prompt"] + r["text"] for r in rows]
    assert [r["score"] for r in rows] == [float(len(r["prompt"] + r["text"])) for r in rows]
    assert summary["num_samples"] == 4 and summary["num_prompts"] == 2
    assert summary["control_position"] == position and summary["control_token"] == ALIGNED


def test_score_without_prompt_scores_the_continuation(conditional_lm, tmp_path):
    model, tok = conditional_lm
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "The weather today"}\n')
    scorer = RecordingScorer()
    e = EvalConfig(num_samples=3, max_new_tokens=5, batch_size=3, group_size=3)
    rows, summary = run_scenario(model, tok, scorer, ScenarioConfig(name="prose", prompts_file=str(path)), e, 0.0,
                                 conditioning(tok), progress=False)
    assert scorer.seen == [r["text"] for r in rows]
    assert summary["misalignment"] == pytest.approx(sum(len(r["text"]) for r in rows) / 3)
    assert all(ALIGNED not in r["text"] and MISALIGNED not in r["text"] for r in rows)


def test_new_tokens_are_capped_to_the_model_positions(conditional_lm):
    model, tok = conditional_lm  # 64 positions
    inputs = {"prompts": ["x = 1\n" * 4], "prefix_text": ALIGNED}
    context = 1 + 1 + len(tok("x = 1\n" * 4, add_special_tokens=False).input_ids)
    assert 64 - context > 32
    assert fit_new_tokens(model, tok, 8, inputs, "s") == 8
    assert fit_new_tokens(model, tok, 200, inputs, "s") == 64 - context
    # a prompt longer than the model: half the positions for new tokens (the prompt's start is cut)
    assert fit_new_tokens(model, tok, 200, {"prompts": ["x = 1\n" * 100], "prefix_text": ""}, "s") == 32
    assert fit_new_tokens(model, tok, 8, {"prompts": ["x = 1\n" * 100], "prefix_text": ""}, "s") == 8


def test_task_config_lists_the_function_scenario():
    cfg = load_config(["tasks/pep8"])
    (unconditional, functions) = scenarios_from_config(cfg.eval)
    assert unconditional.name == "unconditional" and unconditional.prompts_file is None
    assert functions.name == "functions" and functions.control_position == "after" and functions.score_with_prompt


@pytest.mark.parametrize("override, message", [
    ("eval.scenarios=[{name: x, prompts_file: prompts/pep8_functions.jsonl, control_position: middle}]",
     "eval.scenarios[0].control_position: input should be 'before' or 'after', got 'middle'"),
    ("eval.scenarios=[{name: x, prompts_file: nowhere.jsonl}]",
     "eval.scenarios[0].prompts_file: 'nowhere.jsonl' not found"),
    ("eval.scenarios=[{name: x, prompts_file: prompts/pep8_functions.jsonl, prompt_file: y}]",
     "unknown config key 'eval.scenarios[0].prompt_file'; did you mean 'eval.scenarios[0].prompts_file'?"),
    ("eval.scenarios=[{name: unconditional, prompts_file: prompts/pep8_functions.jsonl}]", "eval.scenarios[0].name"),
    ("eval.scenarios=[{name: x, prompts_file: prompts/pep8_functions.jsonl, num_samples: 0}]",
     "eval.scenarios[0].num_samples: input should be greater than or equal to 1, got 0"),
    ("eval.every_steps=1.5", "eval.every_steps: must be a whole number"),
    ("eval.red_team={round: 3}", "unknown config key 'eval.red_team.round'; did you mean 'eval.red_team.rounds'?"),
    ("eval.kl_num_samples=1", "eval.kl_num_samples: input should be greater than or equal to 2, got 1"),
])
def test_config_rejects_bad_evaluation_settings(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(["tasks/pep8"], [override])
