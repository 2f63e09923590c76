"""Scoring a corpus on a Ray cluster: `phf score ... --engine ray [--address ADDR]`.

The corpus is cut into shards (`phf.engines.shards`). Each shard is read, scored and
committed by one unit of work:

* CPU scorers (pep8, pep8-ruff, toxicity's default backend, pii) run as Ray tasks,
  one CPU each; a worker process keeps its scorer between tasks;
* model scorers (hf-classifier, toxicity with the detoxify or hf backend) run on a pool of actors,
  each of which loads the model once and scores its shards in batches, with
  `gpus_per_actor` GPUs each when the cluster has GPUs (fractions share a GPU).

Documents are scored by `phf.data.scoring.score_chunk`, the local engine's own
function, so a record and a failure are the same in both engines.

The output is a folder:

    shard-00000.parquet          scored records of shard 00000, in input order
    shard-00000.failures.jsonl   its failed documents (index in the shard, reason, detail, meta)
    shard-00000.done.json        written last: the shard is complete
    state.json                   scorer, scorer arguments, source and shard plan
    failures.jsonl               every shard's failures, written at the end

A shard's files are written under temporary names and renamed, the done marker last,
so a shard is either complete or absent. Ray retries a task or actor call whose
worker process died (killed, out of memory), which rewrites the shard from the start.
A rerun of the same command skips the shards whose done marker exists; a rerun with
another scorer, scorer arguments, source or shard plan is refused, as by the local
engine. Records of one shard keep the input order; across shards, read the shards in
name order (`sorted(folder.glob("shard-*.parquet"))`) for the corpus order, or sort by
`meta` (path and line, or dataset index) for an order that depends on nothing else.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from phf.data.config import DataConfig
from phf.data.scoring import (DEFAULT_TIME_LIMIT, LOG_FAILURES, ScorerStartError, ScoringFailure, ScoringSummary,
                              _chunk_size, _chunks, _lock, score_chunk)
from phf.errors import DataError
from phf.inputs import SourceStats
from phf.records import ScoredWriter
from phf.scorers import get_scorer
from phf.runfiles import write_text_atomic
from phf.engines.ray_cluster import ray_session
from phf.engines.shards import SHARD_BYTES, SHARD_ROWS, InputShard, plan_input_shards, read_shard

log = logging.getLogger(__name__)

#: toxicity backends that run a neural model (scored on actors, on GPUs when there are some)
MODEL_BACKENDS = ("detoxify", "hf")
#: scorers that always run a neural model and take a `device` argument
MODEL_SCORERS = ("hf-classifier",)
#: times Ray reruns a shard whose worker process died
MAX_RETRIES = 3


def uses_model(scorer: str, scorer_args: dict) -> bool:
    """Whether the scorer loads a neural model (then it runs on actors, not tasks)."""
    if scorer in MODEL_SCORERS:
        return True
    if scorer == "toxicity":
        return scorer_args.get("backend", "auto") in MODEL_BACKENDS
    if scorer == "multi":
        return any(uses_model(spec.get("name", ""), spec.get("args") or {})
                   for spec in (scorer_args.get("scorers") or {}).values())
    return False


@dataclass
class RayScoringResult:
    summary: ScoringSummary
    source: SourceStats
    shards: int = 0
    #: shards already complete when this run started (skipped)
    resumed_shards: int = 0
    failures_path: Path | None = None
    shard_results: list = field(default_factory=list, repr=False)


# --- one shard (in a task or an actor) ------------------------------------------------

def _shard_path(out_dir: Path, shard: InputShard, suffix: str) -> Path:
    return out_dir / f"shard-{shard.name}{suffix}"


def score_shard(shard: InputShard, out_dir: Path, scorer, chunk_size: int, limit: float | None,
                counting: dict, text_field: str, on_bad: str) -> dict:
    """Read, score and commit one shard; return its done record (counts and sums).
    `counting`: the ScoringSummary settings of what is counted (thresholds, combine rule)."""
    records_path = _shard_path(out_dir, shard, ".parquet")
    records_path.unlink(missing_ok=True)  # a previous attempt's, if it got that far
    stats = SourceStats()
    summary = ScoringSummary(time_limit=limit, **counting)
    failures, index = [], 0
    with ScoredWriter(records_path) as writer:  # parquet: written to .partial, renamed on success
        for chunk in _chunks(read_shard(shard, text_field, stats, on_bad), chunk_size):
            for record in score_chunk(scorer, chunk, limit):
                if isinstance(record, ScoringFailure):
                    failures.append(record.to_json(index))
                    summary.fail(record.reason)
                else:
                    writer.write(record)
                    summary.add(record)
                index += 1
    write_text_atomic(_shard_path(out_dir, shard, ".failures.jsonl"), "".join(json.dumps(f) + "\n" for f in failures))
    done = {"shard": shard.name, "pid": os.getpid(), "source": stats.to_dict(), **summary_state(summary)}
    write_text_atomic(_shard_path(out_dir, shard, ".done.json"), json.dumps(done))
    return done


_SCORERS: dict = {}


def _build_scorer(name: str, args: dict):
    try:
        return get_scorer(name, **args)
    except Exception as e:  # reaches the driver as this error's message, not a worker traceback
        raise ScorerStartError(f"the scorer {name!r} could not be built with {args}: {type(e).__name__}: {e}") \
            from None


def _cached_scorer(name: str, args: dict):
    # a Ray worker process runs many tasks: build each scorer once per process
    key = (name, json.dumps(args, sort_keys=True))
    if key not in _SCORERS:
        _SCORERS[key] = _build_scorer(name, args)
    return _SCORERS[key]


def _score_shard_task(shard, out_dir, scorer_name, scorer_args, chunk_size, limit, counting, text_field, on_bad):
    scorer = _cached_scorer(scorer_name, scorer_args)
    return score_shard(shard, Path(out_dir), scorer, chunk_size, limit, counting, text_field, on_bad)


class ShardScorer:
    """An actor: loads the (model) scorer once, then scores shards on it."""

    def __init__(self, scorer_name: str, scorer_args: dict, chunk_size: int, limit, counting, text_field, on_bad):
        # an error here would kill the actor and reach the driver in Ray's words (and be
        # retried max_restarts times): keep it, and raise it from the first shard instead
        try:
            self.scorer, self.error = _build_scorer(scorer_name, scorer_args), None
        except ScorerStartError as e:
            self.scorer, self.error = None, e
        self.settings = (chunk_size, limit, counting, text_field, on_bad)

    def score(self, shard: InputShard, out_dir: str) -> dict:
        if self.error is not None:
            raise self.error
        return score_shard(shard, Path(out_dir), self.scorer, *self.settings)


# --- summaries of shards ----------------------------------------------------------------

def summary_state(s: ScoringSummary) -> dict:
    """What merging needs of a shard's summary, as JSON."""
    return {"documents": s.documents, "segments": s.segments, "characters": s.characters,
            "misaligned_segments": s.misaligned_segments, "failed_documents": s.failed_documents,
            "failures": dict(s.failures), "sums": [[k, v] for k, v in s._sums.items()],
            "removed": {k: v["removed_documents"] for k, v in s.removed_by_threshold.items()}}


def merge_summaries(parts: list[dict], counting: dict, time_limit) -> ScoringSummary:
    """One ScoringSummary over shards, equal to the local engine's over the same records
    (up to the order of float additions)."""
    total = ScoringSummary(time_limit=time_limit, **counting)
    for p in parts:
        for k in ("documents", "segments", "characters", "misaligned_segments", "failed_documents"):
            setattr(total, k, getattr(total, k) + p[k])
        for reason, n in p["failures"].items():
            total.failures[reason] = total.failures.get(reason, 0) + n
        for name, sums in p["sums"]:
            acc = total._sums.setdefault(name, [0.0, 0.0, 0])
            for i in range(3):
                acc[i] += sums[i]
    for objective, threshold in total.document_thresholds.items():
        # a shard scored by an earlier run that counted other thresholds cannot say
        if all(objective in p.get("removed", {}) for p in parts):
            removed = sum(p["removed"][objective] for p in parts)
            total.removed_by_threshold[objective] = {"threshold": threshold, "removed_documents": removed,
                                                     "removed_fraction": removed / max(total.documents, 1)}
        else:
            log.info("not counting what %s would remove: some shards were scored by a run that did not count it",
                     objective)
    for name, (seg_sum, doc_sum, misaligned) in total._sums.items():
        means = {"mean_segment_score": seg_sum / max(total.segments, 1),
                 "mean_document_score": doc_sum / max(total.documents, 1)}
        if name is None:
            total.mean_segment_score, total.mean_document_score = means.values()
        else:
            total.attribute_means[name] = {**means, "misaligned_fraction": misaligned / max(total.segments, 1)}
    return total


def _merge_source(parts: list[dict]) -> SourceStats:
    stats = SourceStats()
    for p in parts:
        stats.read += p["source"]["read"]
        for reason, n in p["source"]["skipped"].items():
            stats.skipped[reason] = stats.skipped.get(reason, 0) + n
    return stats


# --- the run ----------------------------------------------------------------------------

def _prepare_output(out: Path, state: dict, resume: bool) -> None:
    """Check (resume) or clear the output folder, then write its state."""
    state_path = out / "state.json"
    if out.exists() and any(out.iterdir()):
        if not state_path.exists():
            raise DataError(f"{out} exists but {state_path.name} does not, so phf cannot tell what wrote it; "
                            "remove it (or choose another output folder) to score again")
        if resume:
            old = json.loads(state_path.read_text())
            changed = [k for k in state if old.get(k) != state[k]]
            if changed:
                k = changed[0]
                what = "a different shard plan (the input files changed)" if k == "shards" else \
                    f"{k} {old.get(k)!r}, not {state[k]!r}"
                raise DataError(f"{out} was written with {what}; remove it (or pass --restart) to score again, "
                                "or choose another output folder")
        else:
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(state_path, json.dumps(state, indent=2))


def _completed(out: Path, shard: InputShard) -> dict | None:
    try:
        return json.loads(_shard_path(out, shard, ".done.json").read_text())
    except (OSError, ValueError):
        return None


def score_corpus_ray(data: DataConfig, out_dir: str | Path, scorer: str, scorer_args: dict | None = None, *,
                     threshold: float | dict = 0.0, time_limit: float | None = DEFAULT_TIME_LIMIT,
                     source: dict | None = None, resume: bool = True, on_bad: str = "error",
                     address: str | None = None, num_cpus: int | None = None, chunk_size: int | None = None,
                     shard_bytes: int = SHARD_BYTES, shard_rows: int = SHARD_ROWS, actors: int | None = None,
                     gpus_per_actor: float | None = None, document_thresholds: dict | None = None,
                     combine: str = "max", combine_weights: dict | None = None) -> RayScoringResult:
    """Score the corpus of `data` on Ray into the folder `out_dir` (see the module docstring).

    `address`: a running cluster ("auto" or "HOST:PORT"); None starts a local Ray
    instance with `num_cpus` CPUs for this run (inside an existing `ray.init` session,
    that session is used). `actors` and `gpus_per_actor` size the actor pool of a
    model scorer (defaults: one actor per GPU, or one actor on a CPU-only cluster).
    `document_thresholds`, `combine`, `combine_weights`: what the summary counts as removed
    by filtering, as in the local engine's `score_corpus`.
    """
    counting = {"threshold": threshold, "document_thresholds": dict(document_thresholds or {}),
                "combine": combine, "combine_weights": dict(combine_weights or {})}
    scorer_args = scorer_args or {}
    chunk_size = chunk_size or _chunk_size(scorer)
    out = Path(out_dir)
    if out.suffix in (".jsonl", ".json", ".parquet"):
        raise DataError(f"{out}: the Ray engine writes a folder of parquet shards; give a folder name")
    plan = plan_input_shards(data, shard_bytes, shard_rows)
    state = json.loads(json.dumps({"scorer": scorer, "scorer_args": scorer_args, "source": source,
                                   "shards": [asdict(s) for s in plan]}))
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = _lock(out)
    try:
        _prepare_output(out, state, resume)
        done = {s.name: r for s in plan if resume and (r := _completed(out, s)) is not None}
        todo = [s for s in plan if s.name not in done]
        log.info("%d shards: %d complete, %d to score", len(plan), len(done), len(todo))
        if todo:
            with ray_session(address, num_cpus) as ray:
                settings = (chunk_size, time_limit, counting, data.text_field, on_bad)
                if uses_model(scorer, scorer_args):
                    results = _run_actors(ray, todo, out, scorer, scorer_args, settings, actors, gpus_per_actor)
                else:
                    results = _run_tasks(ray, todo, out, scorer, scorer_args, settings)
            done.update({r["shard"]: r for r in results})
        parts = [done[s.name] for s in plan]
        failures_path = out / "failures.jsonl"
        _write_failures(out, plan, failures_path)
    finally:
        lock.close()
    summary = merge_summaries(parts, counting, time_limit)
    resumed = [done[s.name] for s in plan if s not in todo]
    summary.resumed_documents = sum(p["documents"] + p["failed_documents"] for p in resumed)
    if summary.failed_documents:
        log.warning("%d documents failed (listed in %s)", summary.failed_documents, failures_path)
    return RayScoringResult(summary, _merge_source(parts), len(plan), len(resumed), failures_path, parts)


def _write_failures(out: Path, plan: list[InputShard], path: Path) -> None:
    lines = []
    for s in plan:
        for line in _shard_path(out, s, ".failures.jsonl").read_text().splitlines():
            lines.append(json.dumps({"shard": s.name, **json.loads(line)}) + "\n")
    for line in lines[:LOG_FAILURES]:
        log.warning("scorer failed: %s", line.strip())
    write_text_atomic(path, "".join(lines))


def _gather(ray, refs: list, total: int) -> list[dict]:
    """Results of the shard refs as they finish; a shard's error stops the run with its cause."""
    from tqdm.auto import tqdm

    results, pending = [], list(refs)
    with tqdm(total=total, desc="scoring shards (ray)", unit="shard") as bar:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            try:
                results.append(ray.get(ready[0]))
            except ray.exceptions.RayTaskError as e:
                for ref in pending:
                    ray.cancel(ref, force=True)
                _raise_cause(e)
            bar.update(1)
    return results


def _raise_cause(e) -> None:
    """A failed shard's own error when it says what is wrong (a bad record, a scorer that
    cannot be built, a file that cannot be written); anything else in Ray's words, with
    the worker's traceback."""
    if isinstance(e.cause, (ValueError, OSError)):  # ScorerStartError and DataError are ValueErrors
        raise e.cause from None
    raise e


def _run_tasks(ray, todo, out, scorer, scorer_args, settings) -> list[dict]:
    task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(_score_shard_task)
    refs = [task.remote(s, str(out), scorer, scorer_args, *settings) for s in todo]
    return _gather(ray, refs, len(todo))


def _run_actors(ray, todo, out, scorer, scorer_args, settings, actors, gpus_per_actor) -> list[dict]:
    gpus = ray.cluster_resources().get("GPU", 0)
    if gpus_per_actor is None:
        gpus_per_actor = 1 if gpus else 0
    if actors is None:
        actors = max(1, int(gpus / gpus_per_actor)) if gpus_per_actor else 1
    args = dict(scorer_args)
    if scorer in ("toxicity", *MODEL_SCORERS):
        # Ray sets CUDA_VISIBLE_DEVICES to the actor's GPU; an actor given none stays on the CPU
        args.setdefault("device", "cuda" if gpus_per_actor else "cpu")
    log.info("%d scoring actors, %g GPU(s) each", actors, gpus_per_actor)
    actor_cls = ray.remote(num_cpus=1, num_gpus=gpus_per_actor, max_restarts=MAX_RETRIES,
                           max_task_retries=MAX_RETRIES)(ShardScorer)
    pool = [actor_cls.remote(scorer, args, *settings) for _ in range(actors)]
    # shards are dealt out as actors free up: one in flight per actor
    queue, busy = list(todo), {}
    for actor in pool:
        if queue:
            ref = actor.score.remote(queue.pop(0), str(out))
            busy[ref] = actor
    results = []
    from tqdm.auto import tqdm

    try:  # the actors end with the run, whether it finished or failed
        with tqdm(total=len(todo), desc="scoring shards (ray actors)", unit="shard") as bar:
            while busy:
                ready, _ = ray.wait(list(busy), num_returns=1)
                actor = busy.pop(ready[0])
                try:
                    results.append(ray.get(ready[0]))
                except ray.exceptions.RayTaskError as e:
                    _raise_cause(e)
                bar.update(1)
                if queue:
                    busy[actor.score.remote(queue.pop(0), str(out))] = actor
    finally:
        for actor in pool:
            ray.kill(actor)
    return results
