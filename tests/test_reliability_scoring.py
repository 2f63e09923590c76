"""Scorer faults and scoring crash/resume.

A scorer that raises, returns bad scores, runs too long or kills its process costs one
counted failure, never the run; a killed `phf score` rerun continues where it stopped
and writes every document exactly once.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phf.records import complete_lines, read_scored
from phf.data.scoring import ScorerStartError, score_corpus
from phf.scorers.segment import split_lines
from phf.config import DataConfig
from phf.data.sources import iter_documents
from phf.errors import DataError
from phf.scorers.base import Scorer

TESTS = Path(__file__).parent


class FaultyScorer(Scorer):
    """Scores each line by its length; markers in a document trigger one fault each."""

    def __init__(self, delay: float = 0.0):
        self.delay = delay

    def segment(self, text):
        return split_lines(text)

    def score_segments(self, segments):
        text = "".join(segments)
        time.sleep(self.delay)
        if "RAISE" in text:
            raise IndexError("pycodestyle-style internal error")
        if "SLOW" in text:
            time.sleep(60)  # interruptible: the worker's own alarm stops it
        if "HANG" in text:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            time.sleep(60)  # deaf to the alarm: only the parent's watchdog can stop it
        if "DIE" in text:
            os.kill(os.getpid(), signal.SIGKILL)
        if "ONCE:" in text:  # dies the first time only: a retry succeeds
            flag = Path(text.split("ONCE:")[1].split()[0])
            if not flag.exists():
                flag.write_text("died once")
                os.kill(os.getpid(), signal.SIGKILL)
        if "NAN" in text:
            return [float("nan")] * len(segments)
        return [len(s) / 100 for s in segments]


class BrokenInit(Scorer):
    def __init__(self):
        raise TypeError("unexpected keyword 'colour'")

    def segment(self, text):
        return [text]

    def score_segments(self, segments):
        return [0.0] * len(segments)


def _docs(texts):
    return [{"text": t, "meta": {"i": i}} for i, t in enumerate(texts)]


def _failures(out: Path) -> list[dict]:
    path = out.with_name(out.name + ".failures.jsonl")
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_scorer_exceptions_bad_scores_and_timeouts_are_counted_failures(tmp_path):
    texts = [f"doc {i}\n" for i in range(12)]
    texts[2] += "RAISE\n"
    texts[5] += "NAN\n"
    texts[7] += "SLOW\n"
    out = tmp_path / "scored.jsonl"
    summary = score_corpus(_docs(texts), str(out), "test_reliability_scoring:FaultyScorer", num_workers=1,
                           chunk_size=4, time_limit=0.5)
    assert summary.failures == {"IndexError": 1, "invalid scores": 1, "timeout": 1}
    assert summary.documents == 9 and summary.documents_in == len(texts)
    assert [r.meta["i"] for r in read_scored(out)] == [0, 1, 3, 4, 6, 8, 9, 10, 11]
    failed = _failures(out)
    assert [(f["index"], f["reason"]) for f in failed] == [(2, "IndexError"), (5, "invalid scores"), (7, "timeout")]
    assert "nan" in failed[1]["detail"] and failed[0]["meta"] == {"i": 2}


def test_dead_and_hung_workers_are_replaced_and_their_documents_retried_once(tmp_path):
    texts = [f"doc {i}\n" for i in range(16)]
    texts[3] += "DIE\n"  # kills its worker every time: a failure after one retry
    texts[6] += f"ONCE:{tmp_path / 'flag'}\n"  # kills its worker once: the retry scores it
    texts[12] += "HANG\n"  # ignores the alarm: the parent kills the worker
    out = tmp_path / "scored.jsonl"
    t0 = time.time()
    summary = score_corpus(_docs(texts), str(out), "test_reliability_scoring:FaultyScorer", num_workers=2,
                           chunk_size=2, time_limit=0.5)
    assert time.time() - t0 < 60
    assert summary.failures == {"worker died": 1, "timeout": 1}
    assert summary.documents == 14 and summary.documents_in == 16
    records = list(read_scored(out))
    # the neighbours of a crashing document are scored, in input order; the once-crasher too
    assert [r.meta["i"] for r in records] == [i for i in range(16) if i not in (3, 12)]
    assert (tmp_path / "flag").exists()
    failed = _failures(out)
    assert [(f["index"], f["reason"]) for f in failed] == [(3, "worker died"), (12, "timeout")]
    assert "signal 9" in failed[0]["detail"]


def test_a_scorer_that_cannot_be_built_stops_the_run_with_its_reason(tmp_path):
    with pytest.raises(ScorerStartError, match="unexpected keyword 'colour'"):
        score_corpus(_docs(["a\n"] * 4), str(tmp_path / "o.jsonl"), "test_reliability_scoring:BrokenInit",
                     num_workers=2)


def _corpus(tmp_path, n: int, fail_at=()) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    for i in range(n):
        (root / f"f{i:03d}.txt").write_text(f"line one of {i}\nline two\n" + ("RAISE\n" if i in fail_at else ""))
    return root


def _score_cmd(corpus: Path, out: Path, *extra) -> list[str]:
    return [sys.executable, "-m", "phf.cli", "score", "tasks/pep8", "data.source=dir", f"data.path={corpus}",
            "data.glob=*.txt", "task.scorer=test_reliability_scoring:FaultyScorer", "task.scorer_args={delay: 0.03}",
            f"data.scored_path={out}", "-j", "2", *extra]


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}


def test_kill_9_in_the_middle_then_rerun_gives_every_document_exactly_once(tmp_path):
    corpus = _corpus(tmp_path, 150, fail_at=(7, 90))
    # the reference: one uninterrupted run (in-process: the output depends on documents and scorer only)
    ref = tmp_path / "ref.jsonl"
    docs = iter_documents(DataConfig(source="dir", path=str(corpus), glob="*.txt"))
    score_corpus(docs, str(ref), "test_reliability_scoring:FaultyScorer", num_workers=1)

    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(_score_cmd(corpus, out), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 40):
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the parent and its workers, mid-run
    proc.wait()
    done = out.read_bytes().count(b"\n")
    assert 40 <= done < 148, "the run was not interrupted in the middle"

    rerun = subprocess.run(_score_cmd(corpus, out), env=_env(), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert out.read_bytes() == ref.read_bytes()
    assert _failures(out) == _failures(ref)
    summary = json.loads(rerun.stdout[rerun.stdout.index("{"):])
    assert summary["documents"] == 148 and summary["failed_documents"] == 2 and summary["documents_in"] == 150
    assert summary["resumed_documents"] > 0


def test_half_written_last_line_is_cut_and_rescored(tmp_path):
    docs = _docs([f"doc {i}\n" for i in range(30)])
    ref, out = tmp_path / "ref.jsonl", tmp_path / "out.jsonl"
    kw = dict(scorer="test_reliability_scoring:FaultyScorer", num_workers=1, source={"corpus": "thirty"})
    score_corpus(docs, str(ref), **kw)
    score_corpus(docs, str(out), **kw)
    data = ref.read_bytes()
    cut = data.index(b"\n", len(data) // 2) + 25  # mid-line, as a kill during a write leaves it
    out.write_bytes(data[:cut])
    summary = score_corpus(docs, str(out), **kw)
    assert out.read_bytes() == data
    assert summary.resumed_documents == data[:cut].count(b"\n") and summary.documents == 30


def test_rerun_with_another_scorer_or_source_refuses_to_append(tmp_path):
    docs = _docs(["a\n", "b\n"])
    out = tmp_path / "out.jsonl"
    score_corpus(docs, str(out), "test_reliability_scoring:FaultyScorer", num_workers=1, source={"path": "A"})
    with pytest.raises(DataError, match="written with source"):
        score_corpus(docs, str(out), "test_reliability_scoring:FaultyScorer", num_workers=1, source={"path": "B"})
    with pytest.raises(DataError, match="written with scorer"):
        score_corpus(docs, str(out), "pep8", num_workers=1, source={"path": "A"})
    # resume=False (`phf score --restart`) starts over
    summary = score_corpus(docs, str(out), "pep8", num_workers=1, source={"path": "B"}, resume=False)
    assert summary.documents == 2 and summary.resumed_documents == 0 and complete_lines(out) == 2


def test_parquet_output_appears_only_when_complete(tmp_path):
    out = tmp_path / "scored.parquet"

    def docs():
        yield from _docs(["a = 1\n", "b = 2\n"])
        raise RuntimeError("the source broke")

    with pytest.raises(RuntimeError):
        score_corpus(docs(), str(out), "pep8", num_workers=1, chunk_size=1)
    assert not out.exists()
    score_corpus(_docs(["a = 1\n", "b = 2\n"]), str(out), "pep8", num_workers=1)
    assert [r.meta["i"] for r in read_scored(out)] == [0, 1]


def test_two_runs_cannot_append_to_one_output(tmp_path):
    # the holder is another process: a lock is re-entrant within one (phf.run_lock)
    out = tmp_path / "out.jsonl"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from phf.data.scoring import _lock; _lock(Path(sys.argv[1])); print('held', flush=True); "
                               "time.sleep(60)", str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DataError, match=r"out.jsonl is in use by pid \d+ since .* \(phf score\)"):
            score_corpus(_docs(["a\n"]), str(out), "pep8", num_workers=1)
    finally:
        holder.kill()
        holder.wait()
    assert score_corpus(_docs(["a\n"]), str(out), "pep8", num_workers=1).documents == 1
