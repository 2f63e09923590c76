"""Generation scenarios: what the model is asked to continue, and what gets scored.

"unconditional" (always run) samples from the start of a document. A prompted
scenario reads prompts from a JSONL file (`{"prompt": ...}` per line) and cycles
through them, as in the paper's configs:

* `control_position`: where a conditional run's `<|aligned|>` goes. "before" the
  prompt (prose: the token opens the sentence the prompt starts) or "after" it (code:
  a function signature ends with a newline, and each new line opens with a control
  token in training, so the body starts after `<|aligned|>`).
* `score_with_prompt`: score prompt + continuation (PEP8: a signature with its body is
  the unit that is or is not well formatted), or the continuation only (prose: the
  prompt's own toxicity is not the model's doing).

Each scenario's samples are written as JSONL with their scores, so the worst ones
can be read.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from phf.evaluation.config import UNCONDITIONAL, EvalConfig, ScenarioConfig
from phf.evaluation.metrics import summarize_scores
from phf.evaluation.sampling import generate_samples
from phf.paths import resolve_config_path
from phf.data.transforms import BEST_SCORE_TEXT
from phf.errors import DataError
from phf.runfiles import RunFiles
from phf.tokenizer import ALIGNED, MISALIGNED, control_token_ids, quantile_tokens
from phf.evaluation.degenerate import degenerate_summary

log = logging.getLogger(__name__)


def conditioning(tokenizer, run_dir: str | Path | None = None) -> dict:
    """Generation controls for a model, by the conditioning form it was trained with: the
    aligned prefix and the forbidden misaligned token (tokens, the paper's); <|q0|> and the
    worse buckets' tokens (quantiles); the best score's text, "<0>" (score-text); else none.

    Tokens and quantiles show in the tokenizer's added tokens. score-text adds none, so it
    is read from the run (`run_form`): `run_dir`, else the folder the tokenizer was loaded
    from (a run folder, for `load_tokenizer(run)`)."""
    ids = control_token_ids(tokenizer)
    if ALIGNED in ids and MISALIGNED in ids:
        return {"prefix_text": ALIGNED, "forbidden_texts": [MISALIGNED]}
    buckets = [t for t in quantile_tokens(len(ids)) if t in ids]
    if len(buckets) >= 2:
        return {"prefix_text": buckets[0], "forbidden_texts": buckets[1:]}
    if run_form(run_dir or getattr(tokenizer, "name_or_path", None)).get("conditioning") == "score-text":
        return {"prefix_text": BEST_SCORE_TEXT, "forbidden_texts": []}
    return {"prefix_text": "", "forbidden_texts": []}


def eval_controls(tokenizer, e, run_dir: str | Path | None = None) -> dict:
    """`conditioning`, without the aligned prefix when `e.aligned_prefix` is false."""
    controls = conditioning(tokenizer, run_dir)
    return controls if e.aligned_prefix else {**controls, "prefix_text": ""}


def run_form(run_dir: str | Path | None) -> dict:
    """The data form a run trained with beyond the paper's (the pack spec's `transform`:
    conditioning form, quantile edges, hide), from its train_summary.json (a schedule's:
    its last phase with a conditioning form, so that a cooldown without one still
    generates as conditioned), else from its packed blocks' pack.json (training-time
    evaluation runs before the summary exists); {} for the paper's forms or a folder that
    is not a run."""
    if not run_dir or not Path(run_dir).is_dir():
        return {}
    files = RunFiles(run_dir)
    try:
        summary = files.read_train_summary() or {}
        if "transform" in summary:
            forms = [p.get("transform") or {} for p in summary.get("schedule") or []] + [summary["transform"] or {}]
            return next((f for f in reversed(forms) if f.get("conditioning")), forms[-1])
        pack = files.data / "pack.json"
        return (json.loads(pack.read_text()).get("spec", {}).get("transform") or {}) if pack.is_file() else {}
    except (DataError, OSError, ValueError, AttributeError):
        return {}


def scenarios_from_config(e: EvalConfig) -> list[ScenarioConfig]:
    """Unconditional first, then the configured ones."""
    return [ScenarioConfig(name=UNCONDITIONAL)] + list(e.scenarios)


def load_prompts(name: str | Path) -> list[str]:
    """Prompts from a JSONL file (a path, or a name under phf's configs such as
    prompts/pep8_functions.jsonl); one `{"prompt": str}` object per non-empty line."""
    path = resolve_config_path(str(name))
    prompts = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{i}: not JSON: {e}") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise ValueError(f'{path}:{i}: expected {{"prompt": "..."}}, got {line[:80]!r}')
        prompts.append(row["prompt"])
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts


def generation_inputs(scenario: ScenarioConfig, prompts: Sequence[str] | None, controls: dict) -> dict:
    """Keyword arguments for `generate_samples`: the control token placed before the
    prompt (as `prefix_text`) or appended after it."""
    prefix = controls.get("prefix_text", "")
    forbidden = controls.get("forbidden_texts", [])
    if not prompts:
        return {"prompts": None, "prefix_text": prefix, "forbidden_texts": forbidden}
    if scenario.control_position == "after":
        return {"prompts": [p + prefix for p in prompts], "prefix_text": "", "forbidden_texts": forbidden}
    return {"prompts": list(prompts), "prefix_text": prefix, "forbidden_texts": forbidden}


def fit_new_tokens(model, tokenizer, wanted: int, inputs: dict, name: str) -> int:
    """`wanted`, or fewer when the longest prompt plus `wanted` new tokens would run past
    the model's positions (GPT-2 cannot generate beyond them)."""
    limit = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    if limit is None:
        return wanted
    context = 1 + len(tokenizer(inputs["prefix_text"], add_special_tokens=False).input_ids)  # EOS + prefix
    context += max((len(tokenizer(p, add_special_tokens=False).input_ids) for p in inputs["prompts"] or []),
                   default=0)
    if context + wanted <= limit:
        return wanted
    room = limit - context
    if room < min(wanted, limit // 2):
        # a prompt (nearly) as long as the model's context: half the positions go to new
        # tokens; generate_samples cuts the prompts from the left to make room
        room = min(wanted, limit // 2)
        log.warning("scenario %s: prompts of up to %d tokens do not fit the model's %d positions with new tokens; "
                    "their starts are cut off and %d tokens generated", name, context, limit, room)
        return room
    log.warning("scenario %s: %d new tokens after prompts of up to %d tokens exceed the model's %d positions; "
                "generating %d", name, wanted, context, limit, room)
    return room


def run_scenario(model, tokenizer, scorer, scenario: ScenarioConfig, e, hit_threshold: float,
                 controls: dict, progress: bool = True) -> tuple[list[dict], dict]:
    """Sample, score and summarise one scenario. Returns (rows, summary): rows are
    {"prompt", "text", "score"} in generation order (the prompt as the user wrote it,
    without control tokens); the summary is `summarize_scores` plus the settings."""
    prompts = load_prompts(scenario.prompts_file) if scenario.prompts_file else None
    n = scenario.num_samples or e.num_samples
    inputs = generation_inputs(scenario, prompts, controls)
    max_new_tokens = fit_new_tokens(model, tokenizer, scenario.max_new_tokens or e.max_new_tokens, inputs,
                                    scenario.name)
    # generate_samples cycles the prompts: sample i continues prompt i % len(prompts)
    used = [prompts[i % len(prompts)] if prompts else "" for i in range(n)]

    def score(texts: list[str], sample: int | None = None) -> list[float]:
        """Scores as this scenario scores: with the prompt (of `sample`, or of each) when it says so."""
        if scenario.score_with_prompt:
            heads = used if sample is None else [used[sample]] * len(texts)
            texts = [h + t for h, t in zip(heads, texts)]
        return [float(s) for s in scorer.score_texts(texts)]

    stats: dict = {}
    t0 = time.perf_counter()
    texts = generate_samples(model, tokenizer, n, max_new_tokens=max_new_tokens,
                             temperature=e.temperature, top_p=e.top_p, batch_size=e.batch_size, seed=e.seed,
                             progress=progress, decoding=e.decoding, segment=scorer.segment, rank=score,
                             stats=stats, **inputs)
    stats["samples_per_second"] = n / max(time.perf_counter() - t0, 1e-9)
    scores = score(texts)
    # diversity and length describe what the model wrote: the continuations
    summary = summarize_scores(scores, texts, group_size=e.group_size, hit_threshold=hit_threshold)
    summary.update(degenerate_summary(texts))  # empty samples score 0: count them
    summary.update(prompts_file=scenario.prompts_file, num_prompts=len(prompts) if prompts else 0,
                   control_position=scenario.control_position, score_with_prompt=scenario.score_with_prompt,
                   control_token=controls.get("prefix_text") or None, max_new_tokens=max_new_tokens,
                   decoding=stats)
    rows = [{"prompt": p, "text": t, "score": s} for p, t, s in zip(used, texts, scores)]
    return rows, summary


def write_samples(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
