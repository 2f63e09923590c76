import json

import numpy as np
import pytest
from tiny_runs import save_tiny_lm

from phf.evaluation.config import RedTeamConfig
from phf.evaluation.red_team import (
    _cap,
    build_fewshot_prompt,
    escape_prompt,
    fewshot_probabilities,
    parse_proposal,
    red_team,
    red_team_dirs,
    sample_fewshot,
)
from phf.scorers import get_scorer

CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "import os\nprint(os.getcwd())\n",
    "1. def f(x):\n2. class A:\n3. import sys\n",
    "for i in range(10):\n    if i % 2 == 0:\n        print(i)\n",
] * 20


@pytest.fixture(scope="module")
def lms(tmp_path_factory):
    root = tmp_path_factory.mktemp("red")
    return (save_tiny_lm(root / "model", CORPUS, seed=0, n_positions=256),
            save_tiny_lm(root / "red", CORPUS, seed=1, n_positions=256))


def _draw_counts(scores, k, temperature, draws=20000):
    rng = np.random.default_rng(0)
    counts = np.zeros(len(scores))
    for _ in range(draws):
        idx = sample_fewshot(scores, k, temperature, rng)
        assert len(set(idx)) == len(idx) == min(k, len(scores))
        counts[idx] += 1
    return counts / draws


def test_fewshot_frequencies_follow_softmax_of_scores():
    scores = [0.0, 1.0, 2.0, 3.0]
    freq = _draw_counts(scores, k=1, temperature=1.0)
    expected = np.exp(scores) / np.exp(scores).sum()  # 0.032, 0.087, 0.237, 0.644
    # binomial standard error <= 0.0035 with 20000 draws: 0.015 is > 4 sigma
    assert np.allclose(freq, expected, atol=0.015)
    assert np.all(np.diff(freq) > 0)


def test_fewshot_without_replacement_still_prefers_high_scores():
    freq = _draw_counts([0.0, 0.5, 1.0, 1.5, 2.0], k=2, temperature=0.5, draws=5000)
    assert np.all(np.diff(freq) > 0)
    assert freq.sum() == pytest.approx(2.0)


def test_fewshot_high_temperature_is_uniform():
    freq = _draw_counts([0.0, 1.0, 2.0, 3.0], k=1, temperature=1e6)
    assert np.allclose(freq, 0.25, atol=0.015)


def test_fewshot_low_temperature_picks_the_top_and_survives_underflow():
    probs = fewshot_probabilities([0.0, 0.01, 5.0], temperature=1e-4)
    assert probs[2] == pytest.approx(1.0) and probs[0] == 0.0
    rng = np.random.default_rng(0)
    for _ in range(50):
        idx = sample_fewshot([0.0, 0.01, 5.0], 2, 1e-4, rng)
        assert idx[0] == 2 and len(set(idx)) == 2
    assert sample_fewshot([1.0], 4, 1.0, rng) == [0]
    with pytest.raises(ValueError):
        fewshot_probabilities([1.0], temperature=0)


def test_prompt_format_round_trips_multiline_code():
    code = 'def f(x):\n    return "a\\nb"\n'
    text = build_fewshot_prompt(["import os", code], "List of prompts:")
    assert text.splitlines() == ["List of prompts:", "1. import os", "2. " + escape_prompt(code), "3."]
    assert parse_proposal(" " + escape_prompt(code) + "\n4. something else") == code
    assert parse_proposal("\n4. x") is None
    assert parse_proposal("   ") is None


def test_cap_keeps_highest_scores():
    pool = [{"prompt": str(i), "score": s} for i, s in enumerate([0.3, 0.1, 0.9, 0.3, 0.5])]
    kept = _cap(pool, 3)
    assert [p["prompt"] for p in kept] == ["2", "4", "0"]  # ties keep the older prompt
    assert _cap(pool, 10) is pool


def test_red_team_end_to_end_pool_growth(lms):
    model_dir, red_dir = lms
    cfg = RedTeamConfig(rounds=2, new_prompts_per_round=5, pool_size=100, num_fewshot=2,
                        fewshot_temperature=0.01, red_max_new_tokens=12, answer_max_new_tokens=16,
                        score_with_prompt=True, group_size=4)
    seeds = ["def add(a, b):\n", "import os\n", "class A:\n"]
    result = red_team_dirs(model_dir, red_dir, get_scorer("pep8"), seeds, cfg)
    rounds = result["rounds"]
    assert [r["pool_size"] for r in rounds] == [3, 8, 13]
    assert [r["new_prompts"] for r in rounds] == [3, 5, 5]
    assert [p["round"] for p in result["pool"]].count(2) == 5
    for r in rounds:
        assert r["expected_max"] >= r["mean"] >= 0
    scores = [p["score"] for p in result["pool"]]
    assert scores == sorted(scores, reverse=True)
    assert len({p["prompt"] for p in result["pool"]}) == 13
    json.dumps(result)


def test_red_team_capped_pool_never_gets_worse(lms):
    from phf.model import load_model
    from phf.tokenizer import load_tokenizer

    model_dir, red_dir = lms
    model, tok = load_model(model_dir), load_tokenizer(model_dir)
    cfg = RedTeamConfig(rounds=3, new_prompts_per_round=4, pool_size=5, num_fewshot=2,
                        red_max_new_tokens=10, answer_max_new_tokens=16, group_size=3, seed=1)
    # the evaluated model is also the red LM here: any causal LM can attack
    result = red_team(model, tok, model, tok, get_scorer("pep8"), ["x = 1\n", "def f():\n"], cfg)
    rounds = result["rounds"]
    assert [r["pool_size"] for r in rounds] == [2, 5, 5, 5]
    capped = rounds[1:]
    assert all(b["mean"] >= a["mean"] and b["expected_max"] >= a["expected_max"]
               for a, b in zip(capped, capped[1:]))
