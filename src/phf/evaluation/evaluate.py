"""Evaluating a trained run: alignment of its samples and its capability.

* Misalignment, per scenario (see `scenarios.py`): "unconditional" (N samples from
  the start of a document) and each configured prompted scenario. Samples use
  temperature 0.7, top-p 0.9 by default; a conditional run generates after
  <|aligned|> and may not emit <|misaligned|>; control tokens are stripped before
  scoring. Reported per scenario: mean score, expected maximum over groups of 25,
  hit rate, distinct-n, bigram entropy, mean length, and within-run 95% intervals
  of the first three (`misalignment_ci`, `expected_max_ci`, `hit_rate_ci`: a seeded
  bootstrap over the samples, Wilson for the hit rate; see `intervals.py`).
* Capability: the held-out loss per token on the run's held-out documents (the same
  documents for every objective), with control tokens left out of the loss and the
  count, so conditional and MLE runs are compared on the same text; KL(reference ||
  model) and its 95% interval `kl_ci` when a reference LM is given; lm-evaluation-harness
  tasks when asked for.
* Readability: a linear probe's accuracy and AUC at telling the held-out misaligned
  segments from the aligned ones by the final hidden states (`probe.py`; `probe`).

Writes `results.json` and `samples/<scenario>.jsonl` (each sample with its score,
so the worst ones can be read) in the run directory. The top-level misalignment,
expected_max and hit_rate (and their intervals) are the unconditional scenario's.
`run` is the run's folder name, or its parent's for a seed folder (`conditional/seed-1`
is run "conditional", seed 1); `seed` is training.seed and `eval_seed` eval.seed.
`red_team_run` writes `redteam.json`.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import torch
from tqdm.auto import tqdm

from phf.card import refresh_card
from phf.data.packed_shards import ShardedPackedDataset
from phf.data.packing import IGNORE_INDEX, PackedDataset
from phf.errors import DataError
from phf.evaluation import lm_eval_hook
from phf.evaluation.conditioning import evaluate_conditionings
from phf.evaluation.config import UNCONDITIONAL, EvalConfig
from phf.evaluation.degenerate import run_flags
from phf.evaluation.intervals import normal_quantile, sample_intervals
from phf.evaluation.kl import kl_to_reference, samples_nll_under
from phf.evaluation.probe import probe_run, segment_threshold
from phf.evaluation.red_team import red_team_dirs
from phf.evaluation.scenarios import eval_controls, load_prompts, run_scenario, scenarios_from_config, write_samples
from phf.model import load_model
from phf.objectives import token_logprobs
from phf.runfiles import RunFiles, read_json, write_json
from phf.scorers import Scorer, task_scorer
from phf.scorers.config import TaskConfig
from phf.scorers.multi import MultiScorer
from phf.tokenizer import control_token_ids, load_tokenizer

log = logging.getLogger(__name__)

#: results.json keys written by other commands, kept when `phf eval` reruns
_KEPT_KEYS = ("red_team", "lm_eval", "conditioning")


def spread_blocks(num_blocks: int, wanted: int | None) -> list[int]:
    """`wanted` block indices spread evenly over `num_blocks` (all when None or more):
    packed blocks follow the corpus order, so the first ones are a few documents only."""
    if wanted is None or wanted >= num_blocks:
        return list(range(num_blocks))
    if wanted <= 0:
        return []
    return sorted({round(i * (num_blocks - 1) / max(wanted - 1, 1)) for i in range(wanted)})


@torch.no_grad()
def heldout_loss(model, dataset: PackedDataset, batch_size: int = 16, max_tokens: int | None = None,
                 progress: bool = True, max_blocks: int | None = None) -> float:
    """Mean next-token NLL per counted token (labels != -100) over the dataset's blocks,
    or over at most `max_tokens` tokens / `max_blocks` blocks spread evenly over them."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    wanted = max_blocks
    if max_tokens is not None:
        wanted = min(wanted or max_tokens, max(1, max_tokens // dataset.block_size))
    blocks = spread_blocks(len(dataset), wanted)
    try:
        for first in tqdm(range(0, len(blocks), batch_size), desc="held-out loss", unit="batch", disable=not progress):
            items = [dataset[i] for i in blocks[first:first + batch_size]]
            ids = torch.stack([x["input_ids"] for x in items]).to(device)
            labels = torch.stack([x["labels"] for x in items]).to(device)
            # blocks are full (no padding): an all-ones mask says so; without one transformers warns
            # about padding whenever a block starts or ends with EOS, which is also the pad token
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits
            lp = token_logprobs(logits[:, :-1], labels[:, 1:])
            total_nll -= lp.sum().item()
            total_tokens += (labels[:, 1:] != IGNORE_INDEX).sum().item()
    finally:
        model.train(was_training)
    return total_nll / max(total_tokens, 1)


def heldout_dataset(run_dir: Path, tokenizer) -> PackedDataset | ShardedPackedDataset | None:
    """The run's held-out blocks with control tokens ignored, or None when it has none:
    those it packed in its data/ folder, or, when it trained on `phf pack` folders
    (data.packed_path), the held-out blocks of every packed shard."""
    ignore, files = control_token_ids(tokenizer).values(), RunFiles(run_dir)
    packed = files.packed_path()
    if packed:
        data = ShardedPackedDataset(packed, "heldout", ignore_ids=ignore)
    else:
        if not (files.data / "heldout.ids").exists():
            return None
        data = PackedDataset(files.data, "heldout", ignore_ids=ignore)
    return data if len(data) else None


def _same_dir(a: str | Path, b: str | Path) -> bool:
    return Path(a).is_dir() and Path(b).is_dir() and Path(a).resolve() == Path(b).resolve()


def kl_results(run_dir: Path, reference: str, e: EvalConfig) -> dict:
    """KL(reference || this run's model), with the details for results.json.

    The reference's samples are cached next to it (see `kl.py`), so many runs against
    one reference sample it once. The reference itself gets exactly 0 without sampling.
    """
    if _same_dir(reference, run_dir):
        return {"kl": 0.0, "reference": str(reference), "num_samples": 0, "note": "this run is the reference"}
    max_new_tokens = min(e.max_new_tokens, _kl_token_room(reference, run_dir))
    out = kl_to_reference(str(reference), str(run_dir), e.kl_num_samples, max_new_tokens=max_new_tokens,
                          seed=e.seed, batch_size=min(e.batch_size, 32))
    return {**out, "reference": str(reference), "max_new_tokens": max_new_tokens}


def _kl_token_room(*model_dirs) -> int:
    """Reference samples are re-tokenized by each model, which can take more tokens
    than the reference drew (another vocabulary, or bytes decoded to U+FFFD), so
    they are kept to half the smaller model's positions."""
    from transformers import AutoConfig

    limits = []
    for d in model_dirs:
        c = AutoConfig.from_pretrained(str(d))
        limits.append(getattr(c, "n_positions", None) or getattr(c, "max_position_embeddings", None) or 1 << 30)
    return max(1, min(limits) // 2 - 1)


def evaluate_run(run_dir: str | Path, e: EvalConfig, task: TaskConfig, scorer: Scorer | None = None, model=None,
                 tokenizer=None, kl_reference: str | Path | None = None,
                 lm_eval_tasks: list[str] | None = None, out_dir: str | Path | None = None,
                 nll_reference: str | Path | None = None, heldout: bool = True) -> dict:
    """Evaluate the model saved in `run_dir` with evaluation settings `e` and the task's
    scorer; write and return its results.

    `kl_reference` (default: `e.kl_reference`) is a model directory to measure
    KL(reference || model) against; `nll_reference` (default: the KL reference) one to
    rate the samples with (their NLL per token under it); `lm_eval_tasks` (default:
    `e.lm_eval_tasks`) are lm-evaluation-harness tasks to run. `out_dir` (default: the
    run's folder) receives results.json and the samples: another decoding mode of the
    same run goes to its own folder (`phf sweep --decoding`); `heldout=False` skips the
    held-out loss, which the decoding does not change.
    """
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir
    files = RunFiles(run_dir)
    reference = kl_reference if kl_reference is not None else e.kl_reference
    nll_reference = nll_reference if nll_reference is not None else reference
    tasks = list(lm_eval_tasks if lm_eval_tasks is not None else e.lm_eval_tasks)
    if tasks:  # fail before the long sampling, not after it
        if not lm_eval_hook.lm_eval_available():
            raise ValueError(lm_eval_hook._MISSING)
    train_summary = files.read_train_summary() or {}  # read first: a damaged one is named before the sampling
    tokenizer = tokenizer or load_tokenizer(str(run_dir))
    controls = eval_controls(tokenizer, e, run_dir)
    if e.decoding.uses_tags and not controls["forbidden_texts"] and not control_token_ids(tokenizer):
        raise ValueError(f"{run_dir}: eval.decoding.mode {e.decoding.label()} uses the control tokens, and this run "
                         "has none (it was not trained with conditional training); use plain or rerank")
    model = model or load_model(str(run_dir))
    scorer = scorer or task_scorer(task)
    if torch.cuda.is_available():
        model.cuda()

    summaries = {}
    for scenario in scenarios_from_config(e):
        rows, summaries[scenario.name] = run_scenario(model, tokenizer, scorer, scenario, e,
                                                      task.hit_threshold, controls)
        write_samples(rows, RunFiles(out).samples(scenario.name))
        if scenario.name == UNCONDITIONAL:
            unconditional_texts = [r["text"] for r in rows]
        summaries[scenario.name].update(sample_intervals([r["score"] for r in rows], e.group_size,
                                                         task.hit_threshold, seed=e.seed))
        log.info("%s: %s misalignment %.4g", run_dir.name, scenario.name, summaries[scenario.name]["misalignment"])

    samples_nll = None
    if nll_reference:  # capability of what was decoded, comparable across decoding modes
        samples_nll = samples_nll_under(str(nll_reference), unconditional_texts)

    held = heldout_dataset(run_dir, tokenizer) if heldout else None
    loss = heldout_loss(model, held, max_tokens=e.heldout_max_tokens) if held is not None else None
    probe = probe_run(model, tokenizer, run_dir, segment_threshold(task), list(task.attributes), e.probe_segments,
                      seed=e.seed) if heldout and e.probe_segments else None

    main = summaries[UNCONDITIONAL]
    seed_folder = re.fullmatch(r"seed-\d+", run_dir.name)
    results = {
        "run": run_dir.parent.name if seed_folder else run_dir.name,
        "seed": train_summary.get("seed"),
        "eval_seed": e.seed,
        "objective": train_summary.get("objective"),
        "task": task.name,
        "num_tokens": train_summary.get("tokens_seen"),
        "started_from": train_summary.get("started_from"),
        "scored_path": train_summary.get("scored_path"),  # the corpus trained on (the report and runs.json name it)
        "misalignment": main["misalignment"],
        "expected_max": main["expected_max"],
        "hit_rate": main["hit_rate"],
        **{k: main[k] for k in ("misalignment_ci", "expected_max_ci", "hit_rate_ci", "ci")},
        "heldout_loss": loss,
        "heldout_ppl": math.exp(loss) if loss is not None and loss < 50 else None,
        "probe": probe,
        "kl": None,
        "samples_nll_reference": samples_nll,
        "decoding": {**e.decoding.model_dump(), "label": e.decoding.label(), **main.get("decoding", {})},
        "aligned_prefix": e.aligned_prefix,
        "scenarios": summaries,
        "degenerate_samples": main.get("degenerate_samples"),
        "flags": run_flags(summaries),
    }
    for flag in results["flags"]:
        log.warning("%s: %s", run_dir.name, flag)
    if isinstance(scorer, MultiScorer):  # several attributes: each one under every conditioning
        results["conditioning"] = evaluate_conditionings(model, tokenizer, scorer, e, out)
    if reference:
        details = kl_results(run_dir, str(reference), e)
        results.update(_kl_entries(details))
    if tasks:
        results["lm_eval"] = lm_eval_hook.run_lm_eval(run_dir, tasks, limit=e.lm_eval_limit, seed=e.seed)
    if out == run_dir:
        _write_results(run_dir, results)
    else:
        write_json(RunFiles(out).results, {**results, "run_dir": str(run_dir)})
    return results


def _kl_entries(details: dict) -> dict:
    """results.json's KL keys: kl, kl_ci (mean ± 1.96 standard errors over the reference's
    samples: a mean of hundreds of log-ratios, so the normal interval) and kl_details."""
    out = {"kl": details["kl"], "kl_details": details}
    if details.get("kl_stderr") is not None:
        half = normal_quantile(0.975) * details["kl_stderr"]
        out["kl_ci"] = [details["kl"] - half, details["kl"] + half]
    return out


def add_kl(run_dir: str | Path, e: EvalConfig, reference: str | Path) -> dict:
    """Measure KL(reference || run) for an evaluated run and add it to its results.json
    (a run evaluated before its sweep had a reference); returns the results."""
    run_dir = Path(run_dir)
    results = RunFiles(run_dir).read_results() or {}
    results.update(_kl_entries(kl_results(run_dir, str(reference), e)))
    _write_results(run_dir, results)
    return results


def _write_results(run_dir: Path, results: dict) -> None:
    path = RunFiles(run_dir).results
    try:
        old = read_json(path) or {}
    except DataError as e:  # damaged: replaced by the new results, without the keys it may have held
        log.warning("%s", e)
        old = {}
    write_json(path, {**results, **{k: old[k] for k in _KEPT_KEYS if k in old and k not in results}})
    refresh_card(run_dir)  # the model card shows the new results


def red_team_run(run_dir: str | Path, e: EvalConfig, task: TaskConfig, red_lm: str | Path | None = None,
                 prompts_file: str | None = None, scorer: Scorer | None = None, **overrides) -> dict:
    """Red-team the model in `run_dir` with a red LM (default `e.red_lm`).

    Seed prompts: `prompts_file`, else `eval.red_team_prompts`, else the first
    scenario's prompts (whose `score_with_prompt` then applies, unless set in
    `eval.red_team`). `overrides` are RedTeamConfig fields on top of `eval.red_team`.
    Writes `redteam.json` (rounds and the final pool) and a summary into results.json.
    """
    run_dir = Path(run_dir)
    red_lm = red_lm or e.red_lm
    if not red_lm:
        raise ValueError("red teaming needs a red LM: --red-lm DIR or eval.red_lm")
    settings = e.red_team.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    prompts_file = prompts_file or e.red_team_prompts
    score_with_prompt = False
    if not prompts_file:
        if not e.scenarios:
            raise ValueError("red teaming needs seed prompts: --prompts FILE, eval.red_team_prompts, "
                             "or a prompted scenario in eval.scenarios")
        prompts_file = e.scenarios[0].prompts_file
        score_with_prompt = e.scenarios[0].score_with_prompt
    rt_cfg = settings.filled(max_new_tokens=e.max_new_tokens, temperature=e.temperature, top_p=e.top_p,
                             group_size=e.group_size, seed=e.seed, score_with_prompt=score_with_prompt)
    scorer = scorer or task_scorer(task)
    out = red_team_dirs(str(run_dir), str(red_lm), scorer, load_prompts(prompts_file), rt_cfg, decoding=e.decoding)
    out.update(run=run_dir.name, red_lm=str(red_lm), prompts_file=str(prompts_file))
    write_json(RunFiles(run_dir).redteam, out)
    results = RunFiles(run_dir).read_results()
    if results is not None:
        results["red_team"] = {"red_lm": str(red_lm), "rounds": len(out["rounds"]) - 1,
                               "expected_max": [r["expected_max"] for r in out["rounds"]]}
        _write_results(run_dir, results)
    return out
