"""Training crash and resume: kill -9 in the middle of writing a checkpoint, then
`phf train --resume` continues from the last complete checkpoint, sees the same
blocks in the same order and ends where an uninterrupted run ends.

Tolerance: on CPU (one process, fixed thread count) the resumed run is bitwise equal
to the uninterrupted one: every logged loss and the final weights. On GPUs with
non-deterministic kernels expect agreement to about 1e-3 relative in the loss.
"""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from tiny_runs import tiny

from phf.cli import main
from phf.scorers.segment import split_lines
from phf.trainer import COMPLETE_MARKER, JSONLMetricsCallback, last_complete_checkpoint

TINY = tiny({"training.block_size": 32, "training.num_tokens": 10240, "training.save_steps": 5,
             "training.logging_steps": 1, "training.warmup_ratio": 0.1, "training.bf16": "false",
             "data.heldout_fraction": 0.05,
             # the training-time evaluation runs too (it must not disturb the training RNG)
             "eval.every_steps": 8, "eval.callback_num_samples": 2, "eval.max_new_tokens": 4,
             "eval.callback_heldout_blocks": 1})

KILL_MID_CHECKPOINT = """
import os, signal, sys
import torch
torch.set_num_threads(1)
from phf.trainer import PHFTrainer
save_rng = PHFTrainer._save_rng_state
def dying(self, output_dir):
    # step 15's checkpoint has its weights and optimizer written, not its RNG or state
    if self.state.global_step == 15:
        os.kill(os.getpid(), signal.SIGKILL)
    return save_rng(self, output_dir)
PHFTrainer._save_rng_state = dying
from phf.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def scored(tmp_path_factory, code_texts):
    path = tmp_path_factory.mktemp("scored") / "scored.jsonl"
    with open(path, "w") as f:
        for i, text in enumerate(code_texts[:6]):
            lines = split_lines(text)
            scores = [0.0 if j % 3 else 0.01 for j in range(len(lines))]
            f.write(json.dumps({"texts": lines, "scores": scores, "meta": {"i": i}}) + "\n")
    return path


def _args(scored, run):
    return ["train", "tasks/pep8", "objectives/conditional", "models/tiny", *TINY,
            f"data.scored_path={scored}", f"training.output_dir={run}"]


def _rows(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_kill_9_mid_checkpoint_then_resume_matches_an_uninterrupted_run(tmp_path, scored):
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert main(_args(scored, ref)) == 0

    driver = tmp_path / "kill_mid_checkpoint.py"
    driver.write_text(KILL_MID_CHECKPOINT)
    killed = subprocess.run([sys.executable, str(driver), *_args(scored, run)[0:]],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-3000:]
    checkpoints = run / "checkpoints"
    assert (checkpoints / "checkpoint-15" / "model.safetensors").exists()  # half-written ...
    assert not (checkpoints / "checkpoint-15" / COMPLETE_MARKER).exists()  # ... and never picked up
    assert last_complete_checkpoint(checkpoints) == checkpoints / "checkpoint-10"
    assert max(r["step"] for r in _rows(run)) == 15  # steps 11-15 were logged before the kill

    assert main([*_args(scored, run), "--resume"]) == 0
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-10")
    ref_summary = json.loads((ref / "train_summary.json").read_text())
    assert summary["tokens_seen"] == ref_summary["tokens_seen"] == 40 * 8 * 32

    ref_loss = {r["step"]: r["loss"] for r in _rows(ref) if "loss" in r}
    rows = _rows(run)
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == sorted(set(steps)) == list(range(1, 41))  # each step once: no block twice, none skipped
    loss = {r["step"]: r["loss"] for r in rows if "loss" in r}
    # the same blocks in the same order, the same optimizer and RNG state: bitwise equal on CPU
    assert loss == ref_loss
    assert rows[-1]["tokens_seen"] == _rows(ref)[-1]["tokens_seen"]
    ref_eval = {r["step"]: r["eval/misalignment"] for r in _rows(ref) if "eval/misalignment" in r}
    run_eval = {r["step"]: r["eval/misalignment"] for r in rows if "eval/misalignment" in r}
    assert all(run_eval[s] == v for s, v in ref_eval.items())
    a, b = load_file(ref / "model.safetensors"), load_file(run / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_last_complete_checkpoint_ignores_unmarked_and_stray_directories(tmp_path):
    assert last_complete_checkpoint(tmp_path / "none") is None
    for step, marked in [(5, True), (10, True), (15, False), (100, False)]:
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        if marked:
            (d / COMPLETE_MARKER).write_text("{}")
    (tmp_path / "checkpoint-xyz").mkdir()
    (tmp_path / "checkpoint-20.tmp").mkdir()
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-10"


def test_metrics_after_the_resumed_step_are_dropped_once(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 8)) + '{"step": 8, "lo')
    cb = JSONLMetricsCallback(path)
    cb.on_train_begin(None, SimpleNamespace(is_world_process_zero=True, global_step=5), None)
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2, 3, 4, 5]
    cb.on_train_begin(None, SimpleNamespace(is_world_process_zero=True, global_step=0), None)
    assert path.read_text() == ""  # a fresh (not resumed) run into the same directory starts a new file
