"""Scoring a corpus: documents in, scored records out, in parallel, surviving faults.

Documents go to worker processes in chunks (each worker builds its scorer once);
results come back in input order, so a run is reproducible and can be resumed.

A fault in one document is a counted failure with its reason, never the end of the run:

* the scorer raises, returns scores that are not finite and >= 0, or segments that
  do not join to the document: reason = the exception's type, or "invalid scores";
* the scorer runs past `time_limit` seconds on a document: "timeout";
* the worker process dies (a crash in a C extension, the OOM killer) or hangs past
  the limit and is killed: it is replaced and each document of its chunk is retried
  once, one by one; a document that fails that way again is "worker died"/"timeout".

Failures are listed in `<out>.failures.jsonl` (stream index, reason, detail, meta)
and counted in the summary: documents in = documents out + failed documents.

Resuming (JSONL output): records and failures are written in input order, and the
output is flushed before each failure is written (and the failure flushed at once),
so at every moment the complete lines of the two files are exactly the first N
documents of the stream. Rerunning the same command counts them, cuts off a
half-written last line, skips N documents and appends the rest: every document
ends up in the output exactly once. `<out>.state.json` names the scorer and source
that wrote the output; a rerun with different ones refuses to append.
Parquet output cannot be appended to; it is written to `<out>.partial` and renamed
when complete, so an interrupted parquet run starts over.

Model-based scorers that batch on their own run with `num_workers=1` (in-process),
where `score_documents` sees a whole chunk at once; in-process, the time limit
holds for Python code (SIGALRM), but a crash ends the run (rerun to resume).
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import os
import signal
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from itertools import islice
from multiprocessing.connection import wait
from pathlib import Path
from typing import Iterable, Iterator

from tqdm.auto import tqdm

from phf.data.config import DataConfig
from phf.data.sources import iter_documents
from phf.errors import DataError
from phf.inputs import SourceStats
from phf.records import ScoredRecord, ScoredWriter, complete_lines
from phf.run_lock import acquire
from phf.runfiles import write_json
from phf.scorers import Scorer, get_scorer, scorer_class
from phf.scorers.config import TaskConfig

log = logging.getLogger(__name__)

#: default per-document time limit in seconds (pycodestyle is quadratic on some long
#: lines: a 1 MB line can take minutes)
DEFAULT_TIME_LIMIT = 120.0
#: failures logged one by one; the rest are only counted (and listed in the failures file)
LOG_FAILURES = 20


@dataclass
class ScoringSummary:
    documents: int = 0
    segments: int = 0
    characters: int = 0
    misaligned_segments: int = 0
    failed_documents: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    mean_segment_score: float = 0.0
    mean_document_score: float = 0.0
    #: a segment above it is misaligned; {attribute: threshold} for multi-attribute records
    threshold: float | dict = 0.0
    time_limit: float | None = None
    #: documents (scored or failed) already in the output when this run started
    resumed_documents: int = 0
    #: multi-attribute records: {attribute: {mean_segment_score, mean_document_score, misaligned_fraction}}
    attribute_means: dict = field(default_factory=dict)
    #: document thresholds by objective ({"filtering": t}): a document whose avg_score is
    #: above t is removed (multi-attribute avg_scores combined by `combine`, as in training)
    document_thresholds: dict = field(default_factory=dict)
    combine: str = "max"
    combine_weights: dict = field(default_factory=dict)
    #: {objective: {threshold, removed_documents, removed_fraction}} for `document_thresholds`
    removed_by_threshold: dict = field(default_factory=dict)
    # attribute (None: single) -> [sum of segment scores, sum of document scores, misaligned segments]
    _sums: dict = field(default_factory=dict, repr=False)

    @property
    def misaligned_fraction(self) -> float:
        return self.misaligned_segments / max(self.segments, 1)

    @property
    def documents_in(self) -> int:
        """Documents the scorer was given: every one is either in the output or a failure."""
        return self.documents + self.failed_documents

    def add(self, record: ScoredRecord) -> None:
        columns, averages = record.columns(), record.averages()
        self.documents += 1
        self.segments += len(record.texts)
        self.characters += sum(len(t) for t in record.texts)
        over = {name: [score > self._threshold(name) for score in column] for name, column in columns.items()}
        # with several attributes, a segment is misaligned when any of them is over its threshold
        self.misaligned_segments += sum(any(flags) for flags in zip(*over.values()))
        for name, column in columns.items():
            sums = self._sums.setdefault(name, [0.0, 0.0, 0])
            sums[0] += sum(column)
            sums[1] += averages[name]
            sums[2] += sum(over[name])
            if name is None:
                self.mean_segment_score = sums[0] / max(self.segments, 1)
                self.mean_document_score = sums[1] / max(self.documents, 1)
            else:
                self.attribute_means[name] = {"mean_segment_score": sums[0] / max(self.segments, 1),
                                              "mean_document_score": sums[1] / max(self.documents, 1),
                                              "misaligned_fraction": sums[2] / max(self.segments, 1)}
        if self.document_thresholds:
            document = record.document_score(self.combine, self.combine_weights)
            for objective, threshold in self.document_thresholds.items():
                entry = self.removed_by_threshold.setdefault(
                    objective, {"threshold": threshold, "removed_documents": 0, "removed_fraction": 0.0})
                entry["removed_documents"] += document > threshold
                entry["removed_fraction"] = entry["removed_documents"] / self.documents

    def _threshold(self, attribute: str | None) -> float:
        if isinstance(self.threshold, dict):
            if attribute not in self.threshold:
                raise ValueError(f"no misalignment threshold for attribute {attribute!r} (have: "
                                 f"{', '.join(map(str, self.threshold))})")
            return float(self.threshold[attribute])
        return self.threshold

    def fail(self, reason: str) -> None:
        self.failed_documents += 1
        self.failures[reason] = self.failures.get(reason, 0) + 1

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        return {**d, "documents_in": self.documents_in, "misaligned_fraction": self.misaligned_fraction}


# --- scoring one chunk (in a worker or in-process) -----------------------------------

class ScoringTimeout(BaseException):
    """A document ran past the time limit. A BaseException, so that a scorer's own
    `except Exception` fallback (PEP8Scorer has one) cannot swallow it."""


@contextmanager
def time_limit(seconds: float | None):
    """Raise ScoringTimeout in this thread after `seconds` (main thread, POSIX only)."""
    if not seconds or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum, frame):
        raise ScoringTimeout(f"over the {seconds:g} s time limit")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class ScoringFailure:
    """A document the scorer could not score: why, and where the document came from."""

    reason: str
    detail: str
    meta: dict = field(default_factory=dict)

    def to_json(self, index: int) -> dict:
        """The failure as a line of the failures file; `index` is the document's position in the input."""
        return {"index": index, "reason": self.reason, "detail": self.detail, "meta": self.meta}


def _checked(text: str, result) -> tuple[list[str], list[float] | dict[str, list[float]]]:
    """A scorer's (segments, scores) for `text`, with scores as floats; ValueError saying
    what is wrong with it. Scores are a list, or {attribute: list} for several attributes."""
    try:
        segments, scores = result
        segments = list(segments)
        columns = scores.items() if isinstance(scores, dict) else [(None, scores)]
        columns = [(name, [float(x) for x in column]) for name, column in columns]
    except (TypeError, ValueError) as e:
        raise ValueError(f"not a (segments, scores) pair: {e}") from None
    for name, column in columns:
        which = "" if name is None else f" for {name!r}"
        if len(column) != len(segments):
            raise ValueError(f"{len(segments)} segments but {len(column)} scores{which}")
        bad = next((i for i, x in enumerate(column) if not math.isfinite(x) or x < 0), None)
        if bad is not None:
            raise ValueError(f"score {column[bad]!r}{which} of segment {bad} is not finite and >= 0")
    if not all(isinstance(t, str) for t in segments):
        raise ValueError("segments are not all strings")
    if "".join(segments) != text:
        raise ValueError("segments do not join to the document")
    return segments, (columns[0][1] if columns[0][0] is None else dict(columns))


def score_chunk(scorer: Scorer, docs: list[dict], limit: float | None = None) -> list[ScoredRecord | ScoringFailure]:
    """Score documents: a ScoredRecord each, or a ScoringFailure saying why not.

    A scorer that batches (overrides `score_documents`) gets the chunk at once, under
    `limit` x documents; any other is called per document, so the limit holds for
    each one (a chunk with one pathological document is not a chunk-long wait).
    """
    texts = [d["text"] for d in docs]
    try:
        if type(scorer).score_documents is Scorer.score_documents:
            raise _PerDocument
        with time_limit(limit * len(docs) if limit else None), _slow_notice(docs, limit):
            results = scorer.score_documents(texts)
        if len(results) != len(docs):
            raise ValueError(f"score_documents returned {len(results)} results for {len(docs)} documents")
    except (Exception, ScoringTimeout, _PerDocument):  # noqa: BLE001 - retried one by one below
        # one bad document must not fail its neighbours: retry one by one
        results = []
        for doc, text in zip(docs, texts):
            try:
                with time_limit(limit), _slow_notice([doc], limit):
                    results.append(scorer.score_document(text))
            except ScoringTimeout as e:
                results.append(ScoringFailure("timeout", str(e)))
            except Exception as e:  # noqa: BLE001 - any scorer fault is counted, not fatal
                results.append(ScoringFailure(type(e).__name__, str(e)[:500]))
    out = []
    for doc, result in zip(docs, results):
        if isinstance(result, ScoringFailure):
            out.append(ScoringFailure(result.reason, result.detail, doc["meta"]))
            continue
        try:
            segments, scores = _checked(doc["text"], result)
        except ValueError as e:
            out.append(ScoringFailure("invalid scores", str(e), doc["meta"]))
            continue
        avg = scorer.document_score(segments, scores)
        avg = {k: float(v) for k, v in avg.items()} if isinstance(avg, dict) else float(avg)
        out.append(ScoredRecord(segments, scores, avg, doc["meta"]))
    return out


class _PerDocument(Exception):
    """Score the chunk one document at a time."""


#: a document still being scored after this many seconds (or half its time limit) is named in the log
SLOW_NOTICE_SECONDS = 10.0


@contextmanager
def _slow_notice(docs: list[dict], limit: float | None):
    """Log which document(s) are still being scored when they take long."""
    after = min(SLOW_NOTICE_SECONDS, limit / 2) if limit else SLOW_NOTICE_SECONDS
    what = json.dumps(docs[0].get("meta"))[:200] if len(docs) == 1 else f"a batch of {len(docs)} documents"
    timer = threading.Timer(after, log.warning, ("still scoring %s after %g s (%d characters; time limit %s)",
                                                 what, after, sum(len(d["text"]) for d in docs),
                                                 f"{limit:g} s" if limit else "none"))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


# --- a process pool that survives its workers ----------------------------------------

def _worker_main(conn, scorer_name: str, scorer_args: dict, limit: float | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:
        scorer = get_scorer(scorer_name, **scorer_args)
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which stops the run
        conn.send(("init_error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        key, docs = task
        conn.send((key, score_chunk(scorer, docs, limit)))


@dataclass
class _Task:
    seq: int  # the chunk's position in the stream
    offset: int  # position of docs[0] within the chunk
    docs: list[dict]
    attempt: int = 0


class _Worker:
    def __init__(self, ctx, scorer: str, scorer_args: dict, limit: float | None):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, scorer, scorer_args, limit), daemon=True)
        self.proc.start()
        child.close()  # so that a dead worker reads as EOF here
        self.ready = False
        self.task: _Task | None = None
        self.deadline = math.inf

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.proc.kill()
        else:
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


class ScorerStartError(ValueError):
    """The scorer could not be built in a worker (bad `scorer_args`, missing backend)."""


class FaultTolerantPool:
    """Ordered `imap` over chunks of documents, on worker processes that may die.

    A worker that dies or misses its chunk's deadline is replaced; its chunk's
    documents are retried once each, as one-document tasks; a document that
    fails that way again becomes a failure record. At most `2 * num_workers`
    chunks are in flight or waiting to be yielded, so memory stays flat.
    """

    def __init__(self, ctx, num_workers: int, scorer: str, scorer_args: dict, limit: float | None):
        self._new = lambda: _Worker(ctx, scorer, scorer_args, limit)
        self.limit = limit
        self.workers = [self._new() for _ in range(num_workers)]
        self.replaced = 0

    def _deadline(self, task: _Task) -> float:
        if not self.limit:
            return math.inf
        # the worker may spend limit * n on the batch call, then up to limit per document
        return time.monotonic() + 2 * self.limit * len(task.docs) + max(1.0, self.limit)

    def imap(self, chunks: Iterable[list[dict]]) -> Iterator[list[dict]]:
        source = enumerate(chunks)
        self._queue: deque[_Task] = deque()
        self._results: dict[int, list] = {}
        self._remaining: dict[int, int] = {}
        next_out, exhausted = 0, False
        window = 2 * len(self.workers)
        while True:
            while self._remaining.get(next_out, -1) == 0:
                del self._remaining[next_out]
                yield self._results.pop(next_out)
                next_out += 1
            if exhausted and not self._remaining:
                return
            for w in self.workers:
                if not w.ready or w.task is not None:
                    continue
                if not self._queue and not exhausted and len(self._remaining) < window:
                    try:
                        seq, docs = next(source)
                    except StopIteration:
                        exhausted = True
                    else:
                        self._results[seq] = [None] * len(docs)
                        self._remaining[seq] = len(docs)
                        self._queue.append(_Task(seq, 0, docs))
                if not self._queue:
                    break
                w.task = self._queue.popleft()
                w.deadline = self._deadline(w.task)
                try:
                    w.conn.send(((w.task.seq, w.task.offset), w.task.docs))
                except OSError:
                    pass  # the worker just died: _wait sees it and retries the task
            if exhausted and not self._remaining:
                return
            self._wait()

    def _wait(self) -> None:
        busy = [w.deadline for w in self.workers if w.task is not None]
        timeout = max(0.0, min(busy) - time.monotonic()) if busy and min(busy) < math.inf else None
        ready = set(wait([w.conn for w in self.workers] + [w.proc.sentinel for w in self.workers], timeout))
        for i, w in enumerate(self.workers):
            if w.conn in ready or w.proc.sentinel in ready:
                try:
                    message = w.conn.recv() if w.conn.poll() else None
                except (EOFError, OSError):
                    message = None
                if message is not None:
                    self._handle(w, message)
                elif not w.proc.is_alive():
                    code = w.proc.exitcode
                    how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                    self._replace(i, "worker died", f"the scoring process died ({how})")
            elif w.task is not None and time.monotonic() > w.deadline:
                self._replace(i, "timeout", f"the scoring process did not answer within {self.limit:g} s "
                              "per document and was killed", kill=True)

    def _handle(self, w: _Worker, message) -> None:
        key, payload = message
        if key == "init_error":
            raise ScorerStartError(f"the scorer could not be built: {payload}")
        if key == "ready":
            w.ready = True
            return
        seq, offset = key
        self._results[seq][offset:offset + len(payload)] = payload
        self._remaining[seq] -= len(payload)
        w.task, w.deadline = None, math.inf

    def _replace(self, i: int, reason: str, detail: str, kill: bool = False) -> None:
        w = self.workers[i]
        w.stop(kill=True)
        if not w.ready:
            raise ScorerStartError(f"a scoring process died while building the scorer ({detail})")
        self.workers[i] = self._new()
        self.replaced += 1
        task = w.task
        if task is None:
            return
        if task.attempt == 0:
            log.warning("%s; retrying its %d document(s) one by one", detail, len(task.docs))
            retries = [_Task(task.seq, task.offset + j, [d], attempt=1) for j, d in enumerate(task.docs)]
            self._queue.extendleft(reversed(retries))
        else:
            self._results[task.seq][task.offset] = ScoringFailure(reason, detail, task.docs[0]["meta"])
            self._remaining[task.seq] -= 1

    def close(self, kill: bool = False) -> None:
        for w in self.workers:
            w.stop(kill=kill or w.task is not None)


# --- the corpus loop -----------------------------------------------------------------

def _chunk_size(scorer: str, default: int = 8) -> int:
    """Documents per chunk: the scorer class's `chunk_size` when it sets one (a scorer
    that starts a process per call, like pep8-ruff, wants large chunks), else `default`."""
    try:
        return int(getattr(scorer_class(scorer), "chunk_size", default))
    except (ImportError, AttributeError, ValueError, TypeError):
        return default


def _chunks(docs: Iterable[dict], size: int) -> Iterator[list[dict]]:
    it = iter(docs)
    while chunk := list(islice(it, size)):
        yield chunk


#: the files `score_corpus` keeps next to its output
SIDECARS = (".state.json", ".failures.jsonl", ".lock")


def sidecar(out_path: str | Path, suffix: str) -> Path:
    """`<out>.failures.jsonl`, `<out>.state.json`, ... next to the output file."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + suffix)


def _resume(out: Path, failures_path: Path, state_path: Path, state: dict, summary: ScoringSummary) -> int:
    """Check that `out` was written by this setup; rebuild the summary; return documents done."""
    if not state_path.exists():
        raise DataError(f"{out} exists but {state_path.name} does not, so phf cannot tell what wrote it; "
                        "remove it (or pass --restart) to score again")
    old = json.loads(state_path.read_text())
    changed = [k for k in state if old.get(k) != state[k]]
    if changed:
        k = changed[0]
        raise DataError(f"{out} was written with {k} {old.get(k)!r}, not {state[k]!r}; remove it (or pass "
                        "--restart) to score again, or choose another output file")
    complete_lines(out)
    complete_lines(failures_path)
    with open(out, "rb") as f:
        for lineno, line in enumerate(f, 1):
            summary.add(ScoredRecord.from_json(json.loads(line), f"{out}:{lineno}"))
    if failures_path.exists():
        with open(failures_path, "rb") as f:
            for line in f:
                summary.fail(json.loads(line)["reason"])
    summary.resumed_documents = summary.documents_in
    log.info("resuming %s after %d documents (%d scored, %d failed)", out, summary.documents_in,
             summary.documents, summary.failed_documents)
    return summary.documents_in


def score_corpus(docs: Iterable[dict], out_path: str, scorer: str, scorer_args: dict | None = None,
                 num_workers: int | None = None, chunk_size: int | None = None, threshold: float | dict = 0.0,
                 total: int | None = None, time_limit: float | None = DEFAULT_TIME_LIMIT,
                 resume: bool = True, source: dict | None = None, document_thresholds: dict | None = None,
                 combine: str = "max", combine_weights: dict | None = None) -> ScoringSummary:
    """Score `docs` with the named scorer and write scored records to `out_path`.

    `threshold` only feeds the summary's count of misaligned segments (score > threshold;
    a {attribute: threshold} mapping for multi-attribute scorers). `document_thresholds`
    ({objective: threshold on avg_score}, e.g. {"filtering": 0.002361}) feed its
    `removed_by_threshold`: the documents each would remove; `combine` and
    `combine_weights` (the task's) make one score of a multi-attribute avg_score.
    `time_limit` is per document, in seconds (None: no limit). With `resume` (the
    default) an existing JSONL output of the same scorer and `source` (a description
    of where `docs` come from, e.g. the data config) is continued, not overwritten;
    `resume=False` starts over.
    """
    scorer_args = scorer_args or {}
    num_workers = num_workers or os.cpu_count() or 1
    chunk_size = chunk_size or _chunk_size(scorer)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    failures_path, state_path = sidecar(out, ".failures.jsonl"), sidecar(out, ".state.json")
    # normalised through JSON, as it will be read back
    state = json.loads(json.dumps({"scorer": scorer, "scorer_args": scorer_args, "source": source}))
    summary = ScoringSummary(threshold=threshold, time_limit=time_limit,
                             document_thresholds=dict(document_thresholds or {}), combine=combine,
                             combine_weights=dict(combine_weights or {}))
    lock = _lock(out)
    pool = bar = None
    ok = False
    try:
        done = 0
        if resume and out.suffix != ".parquet" and out.exists():
            done = _resume(out, failures_path, state_path, state, summary)
        else:
            failures_path.unlink(missing_ok=True)
            out.unlink(missing_ok=True)
        write_json(state_path, state)
        docs = islice(docs, done, None)
        bar = tqdm(total=total, initial=done, desc=f"scoring ({scorer})", unit="doc")
        index = done
        if num_workers == 1:
            local = get_scorer(scorer, **scorer_args)
            results = (score_chunk(local, c, time_limit) for c in _chunks(docs, chunk_size))
        else:
            ctx = mp.get_context("spawn" if _has_threads() else "fork")
            pool = FaultTolerantPool(ctx, num_workers, scorer, scorer_args, time_limit)
            results = pool.imap(_chunks(docs, chunk_size))
        with ScoredWriter(out, append=done > 0) as writer, open(failures_path, "a", encoding="utf-8") as failed:
            for chunk in results:
                for record in chunk:
                    if isinstance(record, ScoringFailure):
                        writer.flush()  # the output before the failure, so the two stay a prefix
                        failed.write(json.dumps(record.to_json(index)) + "\n")
                        failed.flush()
                        summary.fail(record.reason)
                        if summary.failed_documents <= LOG_FAILURES:
                            log.warning("scorer failed on %s: %s: %s", record.meta, record.reason, record.detail)
                    else:
                        writer.write(record)
                        summary.add(record)
                    index += 1
                bar.update(len(chunk))
        ok = True
    finally:
        if pool is not None:
            pool.close(kill=not ok)
        if bar is not None:
            bar.close()
        lock.close()
    if summary.failed_documents > LOG_FAILURES:
        log.warning("%d documents failed in all (listed in %s)", summary.failed_documents, failures_path)
    return summary


def score_dataset(data: DataConfig, task: TaskConfig, out: str | Path | None = None, *,
                  num_workers: int | None = None, time_limit: float | None = DEFAULT_TIME_LIMIT,
                  restart: bool = False, on_bad: str = "error", filtering_threshold: float | None = None) -> dict:
    """Score the corpus that `data` describes with the task's scorer into `out` (default
    `data.scored_path`), continuing an unfinished output of the same corpus and scorer
    unless `restart`. Writes and returns the summary (`<out>.summary.json`, written last:
    its presence means the corpus is completely scored). The summary also counts the
    documents that filtering would remove at `filtering_threshold` (default: the task's)."""
    counting = summary_counting(task, filtering_threshold)
    out = Path(out or data.scored_path)
    stats = SourceStats()
    docs = iter_documents(data, stats, on_bad=on_bad)
    summary = score_corpus(docs, str(out), task.scorer, task.scorer_args,
                           num_workers=num_workers or data.num_workers,
                           time_limit=time_limit, resume=not restart, source=scoring_source(data), **counting)
    report = {"output": str(out), **summary.to_dict(), "source_records_in": stats.records_in,
              "source_read": stats.read, "source_skipped": stats.skipped}
    write_json(summary_path(out), report)
    return report


def summary_counting(task: TaskConfig, filtering_threshold: float | None = None) -> dict:
    """What a scoring summary counts for `task`: segments above its misalignment
    threshold(s), and the documents filtering would remove at `filtering_threshold`
    (default: the task's), several attributes combined by the task's rule."""
    if filtering_threshold is None:
        filtering_threshold = task.thresholds.get("filtering")
    return {"threshold": task.misalignment_thresholds(),
            "document_thresholds": {} if filtering_threshold is None else {"filtering": filtering_threshold},
            "combine": task.combine, "combine_weights": task.combine_weights}


def scoring_source(data: DataConfig) -> dict:
    """What identifies a corpus for resuming: a rerun with the same source continues the
    output, one with another source is refused (the settings of where records go and of
    how many processes score them do not count)."""
    return data.model_dump(exclude={"scored_path", "num_workers", "heldout_fraction", "heldout_seed", "packed_path"})


def summary_path(out: str | Path) -> Path:
    """Where `score_dataset` writes the summary of the scored corpus `out`."""
    return sidecar(out, ".summary.json")


def _lock(out: Path):
    """Hold `<out>.lock` for the run: two runs appending to one output would interleave
    (see `phf.run_lock`: released however the process ends)."""
    return acquire(out, "phf score", at=sidecar(out, ".lock"))


def _has_threads() -> bool:
    # forking a process that already runs torch's thread pools can deadlock
    import sys

    return "torch" in sys.modules
