"""A run folder is one run (issue 22): each case replayed as a user meets it.

Each replay runs the installed `phf` command in a subprocess and checks its exit
status, the one line of its error (no traceback), and that nothing written before
changed. One tiny trained and evaluated run is shared by the file (copied where a
test damages it). Second kinds of the same fault (another bad score, another damaged
file) run in-process through `phf.cli.main`, which is the same code without the
start-up cost.
"""

import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tiny_runs import scored_corpus, tiny, tiny_sweep

from phf.cli import main
from phf.errors import DataError
from phf.run_lock import RunInUse, hold, lock_path
from phf.runfiles import RunFiles

PHF = str(Path(sys.executable).with_name("phf"))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
#: the tiny settings; no training-time evaluation (it needs no scorer then)
TINY = tiny({"eval.every_steps": 0})


def phf(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([PHF, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=timeout)


def error_line(proc: subprocess.CompletedProcess, *words: str) -> str:
    """The one error line of a refused command: exit status 2, no traceback, naming `words`."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, lines[-5:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = lines[-1]
    assert last.startswith("phf ") and ": error: " in last, lines[-5:]
    for w in words:
        assert w in last, (w, last)
    return last


def in_process_error(capsys, *words: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    last = err[-1]
    assert last.startswith("phf ") and ": error: " in last, err[-5:]
    for w in words:
        assert w in last, (w, last)
    return last


def snapshot(folder: Path) -> dict:
    """{file: sha256} of everything in a run folder: what a refused command must not change."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def train_args(scored, run, *extra, task="tasks/pep8", objective="objectives/mle"):
    return ["train", task, objective, "models/tiny", *TINY, f"data.scored_path={scored}",
            f"training.output_dir={run}", *extra]


@pytest.fixture(scope="module")
def scored(tmp_path_factory, code_texts):
    return scored_corpus(tmp_path_factory.mktemp("scored") / "scored.jsonl", code_texts, num_docs=14)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, scored):
    """A finished run, trained in-process, evaluated by the real `phf eval`, and the
    stderr of that evaluation. Never modified: copy it."""
    run = tmp_path_factory.mktemp("evaluated") / "run"
    assert main(train_args(scored, run)) == 0
    proc = phf("eval", run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run, proc.stderr


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def _holder(target: Path) -> subprocess.Popen:
    """Another process that holds the lock of `target` until killed."""
    code = ("import sys, time; from phf.run_lock import hold\n"
            "with hold(sys.argv[1], 'phf train'):\n    print('held', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "held"
    return proc


# --- case 1: one writer per run folder --------------------------------------------------

@pytest.mark.slow
def test_two_trainings_started_together_into_one_folder_one_runs_the_other_is_refused(scored, tmp_path):
    run = tmp_path / "run"
    procs = [subprocess.Popen([PHF, *train_args(scored, run, f"training.seed={s}")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=ENV) for s in (1, 2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], [o[1][-1500:] for o in outs]
    winner, loser = (0, 1) if procs[0].returncode == 0 else (1, 0)
    line = outs[loser][1].strip().splitlines()[-1]
    assert f"{run} is in use by pid {procs[winner].pid} since " in line and "(phf train)" in line, line
    # the folder holds the winner's run alone, and no lock is left behind
    seed = json.loads((run / "train_summary.json").read_text())["seed"]
    assert seed == winner + 1 and RunFiles(run).seed() == seed
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == sorted(set(steps))
    assert not lock_path(run).exists()


@pytest.mark.parametrize("command", [("eval",), ("card",), ("export", "OUT")])
def test_a_command_on_a_folder_another_process_writes_is_refused_and_nothing_changes(evaluated, tmp_path, command):
    run = _copy(evaluated[0], tmp_path)
    holder = _holder(run)
    before = snapshot(run)
    args = [str(tmp_path / a) if a == "OUT" else a for a in command[1:]]
    try:
        line = error_line(phf(command[0], run, *args), f"{run} is in use by pid {holder.pid} since ", "(phf train)")
        assert "wait for it to finish" in line
        assert snapshot(run) == before and not (tmp_path / "OUT").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_whose_holder_was_killed_is_taken_over_and_the_takeover_logged(tmp_path, caplog):
    run = tmp_path / "run"
    holder = _holder(run)
    with pytest.raises(RunInUse, match=f"in use by pid {holder.pid} since"):
        with hold(run, "phf eval"):
            pass
    holder.send_signal(signal.SIGKILL)  # no chance to release: the file stays, its flock goes
    holder.wait()
    assert lock_path(run).exists()
    with caplog.at_level(logging.WARNING, logger="phf.run_lock"), hold(run, "phf eval"):
        record = json.loads(lock_path(run).read_text())
        assert record["pid"] == os.getpid() and record["command"] == "phf eval"
    assert f"taking over a stale lock: pid {holder.pid} on this host has ended" in caplog.text
    assert not lock_path(run).exists() and run.is_dir()


def test_a_lock_of_another_host_holds_until_its_record_is_older_than_the_limit(tmp_path, caplog):
    run = tmp_path / "run"
    run.mkdir()
    lock_path(run).write_text(json.dumps({"pid": 4242, "host": "node-7", "since": "2026-01-01 10:00:00 UTC",
                                          "command": "phf train"}))
    with pytest.raises(RunInUse, match=r"in use by pid 4242 on host node-7 since 2026-01-01 10:00:00 UTC"):
        with hold(run, stale_after=600):
            pass
    old = time.time() - 601  # its holder stopped refreshing it (a holder touches it every 30 s)
    os.utime(lock_path(run), (old, old))
    with caplog.at_level(logging.WARNING, logger="phf.run_lock"), hold(run, stale_after=600):
        pass
    assert "pid 4242 on host node-7 has not refreshed it for 601 s (more than 600 s)" in caplog.text


def test_locks_are_reentrant_in_one_process_and_released_on_an_error(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ValueError, match="boom"):
        with hold(run, "phf train"), hold(run, "phf eval"):  # train --eval: train, then evaluate
            assert json.loads(lock_path(run).read_text())["command"] == "phf train"
            raise ValueError("boom")
    assert not run.exists()  # the lock made the folder and nothing was written: no empty folder is left


# --- case 2: scored records checked at read time ---------------------------------------

SENTENCES = ["The committee will meet again on Tuesday to discuss the budget. ",
             "Write to jane.doe@example.org if the package fails to build. ",
             "You are a stupid idiot and everybody hates you. ",
             "Rain is expected over the hills later this week. "]


def _two_attribute_corpus(path: Path, bad: dict | None = None, line: int = 3) -> Path:
    """Hand-scored two-attribute records (toxicity, pii), with `bad` replacing the scores of `line`."""
    rows = []
    for i in range(24):
        texts = [SENTENCES[(i + k) % 4] * 3 for k in range(4)]
        tox = [0.9 if "idiot" in t else 0.01 for t in texts]
        pii = [0.02 if "@" in t else 0.0 for t in texts]
        rows.append({"texts": texts, "scores": {"toxicity": tox, "pii": pii}})
    if bad is not None:
        rows[line - 1]["scores"] = bad
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


BAD_SCORES = {
    "missing attribute": ({"toxicity": [0.01] * 4}, "field 'scores' has no attribute 'pii' (the task declares "
                                                    "toxicity, pii; the record has toxicity)"),
    "wrong length": ({"toxicity": [0.01] * 4, "pii": [0.0] * 3},
                     "field 'texts' has 4 segments but field 'scores'['pii'] has 3"),
    "NaN score": ({"toxicity": [0.01, float("nan"), 0.01, 0.01], "pii": [0.0] * 4},
                  "field 'scores'['toxicity'][1] is nan; scores must be finite and >= 0"),
    "string score": ({"toxicity": [0.01] * 4, "pii": [0.0, "0.2", 0.0, 0.0]},
                     "field 'scores'['pii'][1] is '0.2'; scores must be finite and >= 0"),
}


def _multi_args(scored, run, *extra):
    return train_args(scored, run, "training.block_size=32", *extra, task="tasks/toxicity+pii-demo",
                      objective="objectives/conditional")


def test_a_record_missing_an_attribute_stops_training_at_its_line(tmp_path):
    scored = _two_attribute_corpus(tmp_path / "scored.jsonl", BAD_SCORES["missing attribute"][0])
    run = tmp_path / "run"
    error_line(phf(*_multi_args(scored, run)), f"{scored}:3: {BAD_SCORES['missing attribute'][1]}")
    assert not RunFiles(run).outputs()  # refused while reading the records: no model, no summary


@pytest.mark.parametrize("kind", ["wrong length", "NaN score", "string score"])
def test_other_bad_scores_stop_training_at_their_line(tmp_path, capsys, kind):
    scored = _two_attribute_corpus(tmp_path / "scored.jsonl", BAD_SCORES[kind][0])
    assert main(_multi_args(scored, tmp_path / "run")) == 2
    in_process_error(capsys, f"{scored}:3: {BAD_SCORES[kind][1]}")


def test_on_bad_record_skip_trains_without_them_and_counts_them_in_the_summary(tmp_path):
    scored = _two_attribute_corpus(tmp_path / "scored.jsonl")
    lines = scored.read_text().splitlines()
    for n, kind in zip((2, 5, 9, 14), BAD_SCORES):  # one record of each kind
        row = json.loads(lines[n - 1])
        row["scores"] = BAD_SCORES[kind][0]
        lines[n - 1] = json.dumps(row)
    scored.write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    proc = phf(*_multi_args(scored, run), "--on-bad-record", "skip")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"skipped {scored}:2: field 'scores' has no attribute 'pii'" in proc.stderr
    records = json.loads((run / "train_summary.json").read_text())["records"]
    assert records == {"records_in": 24, "read": 20, "skipped": {
        "attribute missing": 1, "'texts' and 'scores' differ in length": 1,
        "score NaN, infinite, negative or not a number": 2}}
    assert json.loads((run / "data" / "pack.json").read_text())["stats"]["records"] == records


# --- case 3: damaged and missing run files ----------------------------------------------

def test_eval_of_a_run_with_truncated_weights_is_one_line_naming_the_file(evaluated, tmp_path):
    run = _copy(evaluated[0], tmp_path)
    weights = run / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    before = snapshot(run)
    line = error_line(phf("eval", run), f"{weights}: cut short: its tensors need")
    assert "checkpoints" in line and f"phf train {run / 'config.yaml'} --overwrite" in line
    assert snapshot(run) == before  # results.json of the earlier evaluation kept; no lock left


def _damage(path: Path, how: str) -> None:
    if how == "deleted":
        path.unlink()
    elif how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "cut at a line":  # what is left is still valid, only shorter
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(lines[: len(lines) // 3]))
    else:  # foreign: another program's file under the same name
        path.write_text("[1, 2, 3]\n")


#: (file, how it is damaged) -> the words of the error of `phf eval`
DAMAGED = {
    ("model.safetensors", "foreign"): "model.safetensors: cut short or not a safetensors file",
    ("config.json", "truncated"): "config.json: damaged, not valid JSON",
    ("config.json", "foreign"): "config.json: not a Hugging Face file (a JSON list, not an object)",
    ("config.yaml", "truncated"): "config.yaml: damaged, not valid YAML",
    ("config.yaml", "cut at a line"): "config.yaml: cut short or not a phf run config (no section ",
    ("config.yaml", "foreign"): "config.yaml: not a phf file (YAML list, not a mapping)",
    ("train_summary.json", "truncated"): "train_summary.json: damaged, not valid JSON",
    ("train_summary.json", "foreign"): "train_summary.json: not a phf file (a JSON list, not an object)",
    ("tokenizer_config.json", "truncated"): "tokenizer_config.json: damaged, not valid JSON",
    ("model.safetensors", "deleted"): "training did not finish (no model saved",
}


@pytest.mark.parametrize("name,how", list(DAMAGED), ids=[f"{n} {h}" for n, h in DAMAGED])
def test_eval_names_each_damaged_or_missing_file_and_what_to_do(evaluated, tmp_path, capsys, name, how):
    run = _copy(evaluated[0], tmp_path)
    _damage(run / name, how)
    before = snapshot(run)
    assert main(["eval", str(run)]) == 2
    line = in_process_error(capsys, DAMAGED[name, how])
    assert any(w in line for w in ("--overwrite", "--resume", "restore", "copy")), line
    assert snapshot(run) == before


@pytest.mark.parametrize("kind", ["read_results", "read_redteam", "read_train_summary"])
@pytest.mark.parametrize("how", ["truncated", "foreign"])
def test_every_json_kind_of_a_run_is_read_through_one_checked_function(evaluated, tmp_path, kind, how):
    run = _copy(evaluated[0], tmp_path)
    files = RunFiles(run)
    path = {"read_results": files.results, "read_redteam": files.redteam,
            "read_train_summary": files.train_summary}[kind]
    if not path.exists():
        path.write_text(json.dumps({"rounds": []}))
    assert getattr(files, kind)() is not None
    _damage(path, how)
    with pytest.raises(DataError, match=f"{path.name}: (damaged, not valid JSON|not a phf file).*; .*phf "):
        getattr(files, kind)()
    path.unlink()
    assert getattr(files, kind)() is None  # absent: not written yet


# --- case 4: a sweep trains on the user's scored corpus ---------------------------------

SWEEP = tiny_sweep({"eval.every_steps": 0, "eval.scenarios": "[]"})


@pytest.mark.slow
def test_a_sweep_trains_on_the_users_scored_corpus_as_it_is(scored, tmp_path):
    out = tmp_path / "sweep"
    before = scored.read_bytes()
    proc = phf("sweep", "--objectives", "mle", "--finetune", "none", "--out", out, *SWEEP,
               f"data.scored_path={scored}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert scored.read_bytes() == before and not (out / "scored.jsonl").exists()
    assert "score" not in json.loads((out / "timings.json").read_text())  # no scoring stage
    assert json.loads((out / "sweep.json").read_text())["scored_corpus"] == str(scored)
    assert json.loads((out / "mle" / "results.json").read_text())["scored_path"] == str(scored)
    assert RunFiles(out / "mle").read_config()["data"]["scored_path"] == str(scored)
    assert f"(scored corpus: {scored})" in (out / "report.md").read_text()


def test_a_sweep_refuses_a_setting_it_would_replace_and_says_why(tmp_path, capsys):
    out = tmp_path / "sweep"
    error_line(phf("sweep", "--out", out, "training.output_dir=elsewhere"),
               "training.output_dir: a sweep sets it for every run (each run trains into OUT/<run>")
    assert not out.exists()
    assert main(["demo", "--out", str(out), "model.path=some/checkpoint"]) == 2
    in_process_error(capsys, "model.path: a sweep sets it for every run (the runs train from scratch")
    assert not out.exists()


# --- case 5: a group larger than the samples ---------------------------------------------

def test_a_group_size_above_the_number_of_samples_is_a_config_error(evaluated, tmp_path):
    run = _copy(evaluated[0], tmp_path)
    before = snapshot(run)
    error_line(phf("eval", run, "eval.group_size=30", "eval.num_samples=20"),
               "eval.group_size: 30 is more than eval.num_samples (20)")
    assert snapshot(run) == before
    from phf.config import load_config
    from phf.errors import ConfigError

    with pytest.raises(ConfigError, match=r"eval.scenarios\[0\].num_samples: 4 is less than eval.group_size \(5\)"):
        load_config(["tasks/pep8"], ["eval.group_size=5", "eval.scenarios=[{name: f, num_samples: 4}]"])


# --- case 6: no pickles to load ---------------------------------------------------------

#: Trainer's resume state in each checkpoint: pickles, read back with torch.load(weights_only=True)
RESUME_PICKLES = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "scaler.pt"}


def _is_pickle(path: Path) -> bool:
    head = path.read_bytes()[:4]
    return head[:1] == b"\x80" or head == b"PK\x03\x04"  # a raw pickle, or torch.save's zip of pickles


def test_a_run_folder_holds_no_pickle_outside_the_resume_state(evaluated):
    run = evaluated[0]
    files = [p for p in run.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name == "training_args.bin"]
    assert (run / "training_args.json").is_file() and json.loads((run / "training_args.json").read_text())["seed"]
    pickles = {p.relative_to(run).as_posix() for p in files if _is_pickle(p)}
    assert pickles and all(p.startswith("checkpoints/checkpoint-") and p.rsplit("/", 1)[1] in RESUME_PICKLES
                           for p in pickles), pickles


# --- case 7: no third-party warning during eval ------------------------------------------

def test_eval_prints_no_third_party_warning(evaluated):
    lines = [line for line in evaluated[1].replace("\r", "\n").splitlines() if line.strip()]
    own = [line for line in lines if re.match(r"\d\d:\d\d:\d\d (INFO|WARNING) phf\.", line)]
    bars = [line for line in lines if "%|" in line]  # tqdm's progress bars
    assert own and [line for line in lines if line not in own and line not in bars] == []
