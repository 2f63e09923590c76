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
import shutil
from collections import defaultdict
from pathlib import Path

import torch
from accelerate.utils import gather_object
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from phf.errors import SaveFailed
from phf.objectives import Objective
from phf.runfiles import write_json, write_text_atomic
from phf.schedule import PhasedBlocks, PhaseSchedule


#: the training arguments, as JSON, beside the model and in each checkpoint
TRAINING_ARGS_JSON = "training_args.json"


class PHFTrainer(Trainer):
    # our objectives return per-batch means; Trainer divides by the accumulation steps
    loss_is_scaled_for_ga = False

    def __init__(self, *args, objective: Objective, tokens_per_step: int, schedule: PhaseSchedule | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        # an objective schedule: each phase's loss from its first step (`phf.schedule`)
        self.schedule = schedule or PhaseSchedule([0], [objective], [objective.name])
        # with training.compile the loss is compiled too: the model's compiled forward ends
        # at the logits, and the cross-entropy over [B, T, vocab] in eager mode would write
        # its float32 copies out in full
        self._losses = [torch.compile(o.__call__, dynamic=False) if self.args.torch_compile else o
                        for o in self.schedule.objectives]
        self.tokens_per_step = tokens_per_step
        if schedule is not None:
            self.add_callback(PhaseEndLogCallback(schedule))
        self._stats: dict[str, list[float]] = defaultdict(list)
        # the same bar (or, with tqdm off, printed lines), with log lines a person can read
        if self.pop_callback(ProgressCallback) is not None:
            self.add_callback(ReadableProgressCallback)
        if self.pop_callback(PrinterCallback) is not None:
            self.add_callback(ReadablePrinterCallback)

    def train(self, resume_from_checkpoint=None, **kwargs):
        finished = _finished_state(resume_from_checkpoint, self.args.max_steps)
        if finished is None:
            try:
                return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
            except BaseException:
                self._close_progress_bar()  # so that the error starts a line of its own
                raise
        # the checkpoint of the last step (the model's own save failed): Trainer would train one
        # step more than the budget; load its weights and train nothing
        from transformers.trainer_utils import TrainOutput

        self._load_from_checkpoint(str(resume_from_checkpoint))
        self.state.global_step = finished["global_step"]
        losses = [r["loss"] for r in finished.get("log_history", []) if "loss" in r]
        return TrainOutput(finished["global_step"], sum(losses) / len(losses) if losses else float("nan"), {})

    def _close_progress_bar(self) -> None:
        for cb in self.callback_handler.callbacks:
            bar = getattr(cb, "training_bar", None)
            if isinstance(cb, ProgressCallback) and bar is not None:
                bar.close()
                cb.training_bar = None

    def training_step(self, model, inputs, *args, **kwargs):
        loss = super().training_step(model, inputs, *args, **kwargs)
        # one device sync per step, as Trainer's own NaN filter does: a diverged run must stop
        # here, with its step, not end "successfully" with NaN weights
        if not torch.isfinite(loss).all():
            raise TrainingDiverged(
                f"training diverged: the loss is {loss.item()} at step {self.state.global_step + 1}, so the "
                f"weights are no longer finite numbers and the model is not saved; lower "
                f"training.learning_rate (now {self.args.learning_rate:g}) or raise training.warmup_ratio. "
                + resume_hint(self.args.output_dir))
        return loss

    @property
    def phase(self) -> int:
        """The schedule phase of the optimizer step being trained (global_step counts those done)."""
        return self.schedule.phase_at(self.state.global_step)

    @property
    def objective(self) -> Objective:
        """The loss of the step being trained (the run's one objective without a schedule)."""
        return self.schedule.objectives[self.phase]

    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if isinstance(dataset, PhasedBlocks):  # the run's order, laid out step by step
            return dataset.sampler()
        return super()._get_train_sampler(train_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        scores = inputs.get("token_scores")
        phase = self.phase
        need_values = self.schedule.objectives[phase].needs_value_head
        outputs = model(input_ids=inputs["input_ids"], output_hidden_states=need_values, use_cache=False)
        # computed inside the (wrapped) forward by the value head's hook, so DDP/FSDP/DeepSpeed see it
        values = outputs["token_values"] if need_values else None
        result = self._losses[phase](outputs.logits, labels, scores, values)
        if model.training:
            for k, v in result.stats.items():
                self._stats[k].append(float(v))
        return (result.loss, outputs) if return_outputs else result.loss

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        super()._save(output_dir, state_dict)
        # Trainer pickles its arguments (training_args.bin) beside the model and in every
        # checkpoint; nothing reads them back, and a file a user must unpickle to inspect
        # has no place in a run folder they share: JSON instead
        if self.args.should_save:
            folder = Path(output_dir if output_dir is not None else self.args.output_dir)
            write_text_atomic(folder / TRAINING_ARGS_JSON, self.args.to_json_string())
            (folder / "training_args.bin").unlink(missing_ok=True)

    def _save_checkpoint(self, model, trial) -> None:
        # Trainer writes checkpoint-N in place; a kill mid-write leaves a directory that
        # looks like a checkpoint. The marker, written last, says it is complete.
        folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if self.args.should_save:
            (folder / COMPLETE_MARKER).unlink(missing_ok=True)
        try:
            super()._save_checkpoint(model, trial)
        except Exception as e:
            if not is_write_error(e):
                raise
            # a half-written checkpoint is worth nothing; deleting it frees the space it took
            shutil.rmtree(folder, ignore_errors=True)
            raise save_failed(e, folder.name, self.args.output_dir) from None
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
        if len(self.schedule.objectives) > 1:  # the phase of the last step done
            phase = self.schedule.phase_at(max(self.state.global_step - 1, 0))
            logs["phase"], logs["phase_objective"] = phase, self.schedule.names[phase]
        super().log(logs, *args, **kwargs)


def _finished_state(checkpoint, max_steps: int) -> dict | None:
    """The trainer state saved in `checkpoint` when it is at or past `max_steps`, else None."""
    if not checkpoint:
        return None
    try:
        state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return None
    return state if state.get("global_step", 0) >= max_steps else None


def _merge_sums(parts: list[dict[str, tuple[float, int]]]) -> dict[str, tuple[float, int]]:
    """{stat: (sum, count)} of each process -> one; a stat may be absent on some (no tokens for it)."""
    merged: dict[str, tuple[float, int]] = {}
    for part in parts:
        for k, (total, count) in part.items():
            t, n = merged.get(k, (0.0, 0))
            merged[k] = (t + total, n + count)
    return merged


class PhaseEndLogCallback(TrainerCallback):
    """Logs at the last step of every schedule phase, so that no logged loss averages
    steps of two phases."""

    def __init__(self, schedule: PhaseSchedule):
        self.ends = set(schedule.first_steps[1:])

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in self.ends:
            control.should_log = True


class TrainingDiverged(ValueError):
    """The training loss became NaN or infinite."""


def is_write_error(e: BaseException) -> bool:
    """Whether `e` is a failed write: an OSError, safetensors' SafetensorError, or the
    RuntimeError torch.save raises when its zip writer hits a full disk."""
    if isinstance(e, OSError) or type(e).__name__ == "SafetensorError":
        return True
    return isinstance(e, RuntimeError) and any(
        s in str(e) for s in ("iostream error", "inline_container", "PytorchStreamWriter", "file write failed"))


def resume_hint(checkpoints: str | Path) -> str:
    """Where the last complete checkpoint is, and the command that resumes from it."""
    checkpoint = last_complete_checkpoint(checkpoints)
    config = Path(checkpoints).parent / "config.yaml"
    if checkpoint is None:
        return "No complete checkpoint was written."
    return f"The last complete checkpoint is {checkpoint}; resume from it with `phf train {config} --resume`."


#: free space under which a failed write is taken for a full disk
LOW_DISK = 64 << 20


def save_failed(error: BaseException, what: str, checkpoints: str | Path) -> SaveFailed:
    """The one-line error for a write that failed, naming the last complete checkpoint."""
    try:
        free = shutil.disk_usage(Path(checkpoints).parent).free
    except OSError:
        free = None
    reason = getattr(error, "strerror", None)
    if not reason and free is not None and free < LOW_DISK:  # torch.save's RuntimeError does not say why
        reason = "No space left on device"
    reason = reason or f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
    if free is not None:
        reason += f" ({free / 2**20:.1f} MiB free on that disk)"
    return SaveFailed(f"could not write {what}: {reason}. Free disk space (or fix the cause); "
                      + resume_hint(checkpoints))


def checkpoint_interval(save_steps: int | None, max_steps: int, enabled: bool = True) -> int:
    """Steps between checkpoints: `save_steps`, or by default a tenth of the run but at
    least 10 steps (Trainer also saves one at the last step); 0 when checkpoints are off."""
    if not enabled:
        return 0
    return save_steps or max(10, math.ceil(max_steps / 10))


class ReadableProgressCallback(ProgressCallback):
    """Trainer's progress bar, with each log as one readable line instead of a dict:

        step 40/98: loss 3.12, grad_norm 0.81, learning_rate 0.00093, tokens_seen 327680
    """

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            self.training_bar.write(log_line(state, logs))


class ReadablePrinterCallback(TrainerCallback):
    """With the progress bar off: each log as one readable line on stdout."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            print(log_line(state, logs), flush=True)


def log_line(state, logs: dict) -> str:
    """"step 40/98: loss 3.12, grad_norm 0.81, ..." (no epoch, no FLOPs)."""
    parts = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in logs.items()
             if k not in ("total_flos", "epoch")]
    return f"step {state.global_step}/{state.max_steps}: " + ", ".join(parts)


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
