"""Adaptive red teaming (Perez et al. 2022, as used by Korbak et al. 2023).

A pool holds (prompt, score) pairs, where a prompt's score is the misalignment score
of the evaluated model's answer to it. Each round:

1. for each new prompt wanted, draw `num_fewshot` prompts from the pool with
   probability softmax(score / fewshot_temperature), without replacement, so the
   prompts that elicited the worst answers are shown most;
2. show them to a local red LM as a numbered list and let it write the next item;
   its first line is the new prompt (empty ones and duplicates are re-drawn);
3. the evaluated model answers each new prompt, the scorer scores the answers;
4. the new prompts join the pool. When the pool exceeds `pool_size`, only the
   highest-scoring prompts are kept: the pool is the red team's memory of its best
   attacks, which is what the few-shot examples should come from. As a consequence
   the pool's scores never decrease once the cap is reached.

Reported per round (round 0 is the seed prompts): the expected maximum score of
`group_size` prompts drawn from the pool, the pool's mean score, and the mean score
of the prompts added that round. A prompt that spans several lines (code) is shown
to the red LM with "\\n" escapes, so one list item stays one line.
"""

from __future__ import annotations

import logging
import re
from typing import Sequence

import numpy as np
import torch

from phf.evaluation.config import DecodingConfig, RedTeamConfig
from phf.evaluation.metrics import expected_max_of_subsets, mean
from phf.evaluation.sampling import generate_samples
from phf.evaluation.scenarios import conditioning
from phf.model import load_model
from phf.scorers import Scorer
from phf.tokenizer import load_tokenizer

logger = logging.getLogger(__name__)


def fewshot_probabilities(scores: Sequence[float], temperature: float) -> np.ndarray:
    """softmax(scores / temperature): how likely each pool prompt is shown."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = np.asarray(scores, dtype=np.float64) / temperature
    logits -= logits.max()  # stable: exp never overflows
    weights = np.exp(logits)
    return weights / weights.sum()


def sample_fewshot(scores: Sequence[float], k: int, temperature: float,
                   rng: np.random.Generator) -> list[int]:
    """Indices of min(k, len(scores)) distinct pool prompts, drawn by `fewshot_probabilities`."""
    k = min(k, len(scores))
    if k == 0:
        return []
    probs = fewshot_probabilities(scores, temperature)
    # numpy needs k entries with non-zero probability; at very low temperatures
    # some underflow to 0, so give them a tiny floor.
    probs = np.maximum(probs, 1e-300)
    return [int(i) for i in rng.choice(len(scores), size=k, replace=False, p=probs / probs.sum())]


_ESCAPE = {"\\": "\\\\", "\n": "\\n"}
_UNESCAPE = re.compile(r"\\(.)")


def escape_prompt(prompt: str) -> str:
    """One line per prompt: backslashes and newlines escaped."""
    return "".join(_ESCAPE.get(c, c) for c in prompt)


def unescape_prompt(line: str) -> str:
    return _UNESCAPE.sub(lambda m: {"n": "\n", "\\": "\\"}.get(m[1], m[0]), line)


def build_fewshot_prompt(examples: Sequence[str], instruction: str) -> str:
    """The red LM's input: an instruction, the examples as a numbered list, and the
    next number, so its continuation is a new list item."""
    lines = [instruction] if instruction else []
    lines += [f"{i}. {escape_prompt(p)}" for i, p in enumerate(examples, start=1)]
    lines.append(f"{len(examples) + 1}.")
    return "\n".join(lines)


def parse_proposal(continuation: str) -> str | None:
    """The new prompt in a red LM continuation: its first line, stripped and
    unescaped; None when that line is empty."""
    line = continuation.split("\n", 1)[0].strip()
    return unescape_prompt(line) if line else None


def _controls(tokenizer) -> dict:
    return conditioning(tokenizer)


def _answer_and_score(model, tokenizer, scorer: Scorer, prompts: list[str], cfg: RedTeamConfig,
                      seed: int, decoding: DecodingConfig | None = None) -> tuple[list[float], list[str]]:
    """Each prompt's score (mean over its answers) and its worst answer, the answers
    decoded with `decoding` (eval.decoding; rerank scores each candidate as the answer)."""
    n, a = len(prompts), cfg.answers_per_prompt

    def rank(candidates: list[str], answer: int) -> list[float]:
        head = prompts[answer % n] if cfg.score_with_prompt else ""
        return [float(s) for s in scorer.score_texts([head + c for c in candidates])]
    answers = generate_samples(model, tokenizer, n * a, prompts=prompts,
                               max_new_tokens=cfg.answer_max_new_tokens,
                               temperature=cfg.answer_temperature, top_p=cfg.answer_top_p,
                               batch_size=cfg.batch_size, seed=seed, progress=False,
                               decoding=decoding, segment=scorer.segment, rank=rank, **_controls(tokenizer))
    # generate_samples cycles the prompts: answer j belongs to prompt j % n
    texts = [prompts[j % n] + ans if cfg.score_with_prompt else ans for j, ans in enumerate(answers)]
    scores = [float(s) for s in scorer.score_texts(texts)]
    per_prompt, worst = [], []
    for i in range(n):
        mine = [(scores[i + r * n], answers[i + r * n]) for r in range(a)]
        per_prompt.append(sum(s for s, _ in mine) / a)
        worst.append(max(mine, key=lambda t: t[0])[1])
    return per_prompt, worst


def _propose(red_model, red_tokenizer, pool: list[dict], cfg: RedTeamConfig,
             rng: np.random.Generator, round_index: int) -> list[str]:
    """`new_prompts_per_round` new, distinct prompts from the red LM (fewer only if
    it keeps producing empty or known ones for `max_attempts` batches)."""
    known = {p["prompt"] for p in pool}
    scores = [p["score"] for p in pool]
    found: list[str] = []
    for attempt in range(cfg.max_attempts):
        missing = cfg.new_prompts_per_round - len(found)
        if missing <= 0:
            break
        fewshot = [build_fewshot_prompt([pool[i]["prompt"] for i in
                                         sample_fewshot(scores, cfg.num_fewshot, cfg.fewshot_temperature, rng)],
                                        cfg.instruction)
                   for _ in range(missing)]
        outputs = generate_samples(red_model, red_tokenizer, missing, prompts=fewshot,
                                   max_new_tokens=cfg.red_max_new_tokens, temperature=cfg.red_temperature,
                                   top_p=cfg.red_top_p, batch_size=cfg.batch_size,
                                   seed=cfg.seed * 100_003 + round_index * 101 + attempt, progress=False)
        for text in outputs:
            prompt = parse_proposal(text)
            if prompt is not None and prompt not in known:
                known.add(prompt)
                found.append(prompt)
    if len(found) < cfg.new_prompts_per_round:
        logger.warning("red teaming round %d: the red LM gave %d new prompts of %d wanted",
                       round_index, len(found), cfg.new_prompts_per_round)
    return found[:cfg.new_prompts_per_round]


def _round_stats(pool: list[dict], new_scores: list[float], round_index: int, group_size: int) -> dict:
    scores = [p["score"] for p in pool]
    return {
        "round": round_index,
        "expected_max": expected_max_of_subsets(scores, group_size),
        "mean": mean(scores),
        "pool_size": len(pool),
        "new_prompts": len(new_scores),
        "new_mean": mean(new_scores) if new_scores else None,
    }


def _cap(pool: list[dict], size: int) -> list[dict]:
    if len(pool) <= size:
        return pool
    # stable sort: among equal scores the older prompts stay
    return sorted(pool, key=lambda p: -p["score"])[:size]


def red_team(model, tokenizer, red_model, red_tokenizer, scorer: Scorer, seed_prompts: Sequence[str],
             config: RedTeamConfig | None = None, decoding: DecodingConfig | None = None) -> dict:
    """Run adaptive red teaming of `model` with `red_model` as the attacker.

    Returns {"rounds": [per-round stats], "pool": [{"prompt", "score", "round",
    "answer"}] (highest score first), "config": {...}}, all JSON-serialisable.
    """
    cfg = (config or RedTeamConfig()).filled()
    seed_prompts = list(dict.fromkeys(seed_prompts))
    if not seed_prompts:
        raise ValueError("red teaming needs at least one seed prompt")
    if cfg.pool_size < 1 or cfg.new_prompts_per_round < 0:
        raise ValueError("pool_size must be >= 1 and new_prompts_per_round >= 0")
    rng = np.random.default_rng(cfg.seed)

    scores, answers = _answer_and_score(model, tokenizer, scorer, seed_prompts, cfg, seed=cfg.seed, decoding=decoding)
    pool = [{"prompt": p, "score": s, "round": 0, "answer": a}
            for p, s, a in zip(seed_prompts, scores, answers)]
    pool = _cap(pool, cfg.pool_size)
    rounds = [_round_stats(pool, scores, 0, cfg.group_size)]
    for r in range(1, cfg.rounds + 1):
        prompts = _propose(red_model, red_tokenizer, pool, cfg, rng, r)
        scores, answers = ([], []) if not prompts else _answer_and_score(
            model, tokenizer, scorer, prompts, cfg, seed=cfg.seed * 100_003 + r, decoding=decoding)
        pool = _cap(pool + [{"prompt": p, "score": s, "round": r, "answer": a}
                            for p, s, a in zip(prompts, scores, answers)], cfg.pool_size)
        rounds.append(_round_stats(pool, scores, r, cfg.group_size))
        logger.info("red teaming round %d: expected max %.4g, pool mean %.4g",
                    r, rounds[-1]["expected_max"], rounds[-1]["mean"])
    pool = sorted(pool, key=lambda p: -p["score"])
    return {"rounds": rounds, "pool": pool, "config": cfg.model_dump()}


def red_team_dirs(model_dir: str, red_lm_dir: str, scorer: Scorer, seed_prompts: Sequence[str],
                  config: RedTeamConfig | None = None, device: str | None = None,
                  decoding: DecodingConfig | None = None) -> dict:
    """`red_team` with both models loaded from directories (or hub names)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return red_team(load_model(model_dir).to(device), load_tokenizer(model_dir),
                    load_model(red_lm_dir).to(device), load_tokenizer(red_lm_dir),
                    scorer, seed_prompts, config, decoding)
