"""`transformers.Trainer` with the loss routed through a phf `Objective`.

Going through Trainer is what makes `accelerate launch` / `torchrun` (DDP, FSDP,
DeepSpeed), checkpointing and resuming work without code of our own. We only change
how the loss is computed and what gets logged: each objective's statistics, and the
number of tokens seen, to the run's `metrics.jsonl` next to TensorBoard.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from pathlib import Path

import torch
from accelerate.utils import gather_object
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from phf.objectives import Objective
from phf.runfiles import write_json, write_text_atomic


class PHFTrainer(Trainer):
    # our objectives return per-batch means; Trainer divides by the accumulation steps
    loss_is_scaled_for_ga = False

    def __init__(self, *args, objective: Objective, tokens_per_step: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.objective = objective
        # with training.compile the loss is compiled too: the model's compiled forward ends
        # at the logits, and the cross-entropy over [B, T, vocab] in eager mode would write
        # its float32 copies out in full
        self._loss = torch.compile(objective.__call__, dynamic=False) if self.args.torch_compile else objective
        self.tokens_per_step = tokens_per_step
        self._stats: dict[str, list[float]] = defaultdict(list)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        scores = inputs.get("token_scores")
        need_values = self.objective.needs_value_head
        outputs = model(input_ids=inputs["input_ids"], output_hidden_states=need_values, use_cache=False)
        # computed inside the (wrapped) forward by the value head's hook, so DDP/FSDP/DeepSpeed see it
        values = outputs["token_values"] if need_values else None
        result = self._loss(outputs.logits, labels, scores, values)
        if model.training:
            for k, v in result.stats.items():
                self._stats[k].append(float(v))
        return (result.loss, outputs) if return_outputs else result.loss

    def _save_checkpoint(self, model, trial) -> None:
        # Trainer writes checkpoint-N in place; a kill mid-write leaves a directory that
        # looks like a checkpoint. The marker, written last, says it is complete.
        folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if self.args.should_save:
            (folder / COMPLETE_MARKER).unlink(missing_ok=True)
        super()._save_checkpoint(model, trial)
        # every process writes into the checkpoint (its RNG state; its shards under FSDP or
        # DeepSpeed): the marker waits for all of them
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            _fsync_tree(folder)
            write_json(folder / COMPLETE_MARKER, {"global_step": self.state.global_step}, durable=True)

    def log(self, logs: dict, *args, **kwargs) -> None:
        if "loss" in logs:  # a training log: add objective stats averaged since the last one
            sums = {k: (sum(values), len(values)) for k, values in self._stats.items()}
            self._stats.clear()
            if self.args.world_size > 1:  # over every process's batches, not rank 0's alone
                sums = _merge_sums(gather_object([sums]))
            for k, (total, count) in sums.items():
                logs[f"objective/{k}"] = total / count
        logs["tokens_seen"] = self.state.global_step * self.tokens_per_step
        super().log(logs, *args, **kwargs)


def _merge_sums(parts: list[dict[str, tuple[float, int]]]) -> dict[str, tuple[float, int]]:
    """{stat: (sum, count)} of each process -> one; a stat may be absent on some (no tokens for it)."""
    merged: dict[str, tuple[float, int]] = {}
    for part in parts:
        for k, (total, count) in part.items():
            t, n = merged.get(k, (0.0, 0))
            merged[k] = (t + total, n + count)
    return merged


#: written into a checkpoint directory after everything else: only marked checkpoints are resumed from
COMPLETE_MARKER = "phf_checkpoint_complete.json"


def last_complete_checkpoint(folder: str | Path) -> Path | None:
    """The checkpoint with the highest step that was completely written, or None."""
    folder = Path(folder)
    steps = []
    for d in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if folder.is_dir() else ():
        step = d.name.rpartition("-")[2]
        if step.isdigit() and (d / COMPLETE_MARKER).is_file():
            steps.append((int(step), d))
    return max(steps)[1] if steps else None


def _fsync_tree(folder: Path) -> None:
    for f in folder.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())


class JSONLMetricsCallback(TrainerCallback):
    """Appends every log (step, tokens seen, loss, objective stats) to metrics.jsonl.

    When training starts (or resumes from a checkpoint) rows after the starting step
    are dropped: they belong to a run that was interrupted after that checkpoint and
    will be logged again, so each step appears once.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines(keepends=True):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a half-written last line
                continue
            if line.endswith("\n") and row.get("step", 0) <= state.global_step:
                keep.append(line)
        write_text_atomic(self.path, "".join(keep), durable=True)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        row = {"step": state.global_step, **{k: _plain(v) for k, v in logs.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


def _plain(v):
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
