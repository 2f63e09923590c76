"""Evaluation during training: the curves of misalignment vs tokens seen.

Every `eval.every_steps` optimizer steps, at the first step and at the last, the
process of rank 0 draws `eval.callback_num_samples` unconditional samples (same
seed each time, so points differ by the model only), scores them, and measures the
loss on `eval.callback_heldout_blocks` held-out blocks spread over the held-out
split. The numbers go through `Trainer.log`, so they land in metrics.jsonl (with
step and tokens_seen) and TensorBoard like the training loss:

    {"step": 40, "tokens_seen": 163840, "eval/misalignment": 0.012, "eval/heldout_loss": 3.1, ...}

Only rank 0 generates, with the unwrapped model: right for single-device and DDP
runs (the other ranks wait at their next gradient all-reduce). Under FSDP or
DeepSpeed ZeRO-3 the parameters are sharded, so set `eval.every_steps=0` there and
evaluate the saved model with `phf eval`.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from phf.evaluation.config import UNCONDITIONAL, EvalConfig, ScenarioConfig
from phf.evaluation.evaluate import heldout_dataset, heldout_loss
from phf.evaluation.metrics import summarize_scores
from phf.evaluation.sampling import generate_samples
from phf.evaluation.scenarios import eval_controls, fit_new_tokens, generation_inputs
from phf.scorers import task_scorer
from phf.scorers.config import TaskConfig

log = logging.getLogger(__name__)


def eval_interval(every_steps: float, max_steps: int) -> int:
    """Steps between evaluations: `every_steps` itself, or for a value < 1 that
    fraction of `max_steps` (rounded up, at least 1); 0 means never."""
    if every_steps <= 0:
        return 0
    if every_steps < 1:
        return max(1, math.ceil(every_steps * max_steps))
    return int(every_steps)


def eval_steps(every_steps: float, max_steps: int, start: int = 0) -> list[int]:
    """The steps evaluated in a run of `max_steps` that starts (or resumes) at `start`."""
    interval = eval_interval(every_steps, max_steps)
    if not interval:
        return []
    steps = [s for s in range(start, max_steps + 1) if s % interval == 0 or s == max_steps]
    return [start] + steps if start not in steps else steps


class EvalCallback(TrainerCallback):
    """Samples, scores and held-out loss at regular steps; logged through the trainer."""

    def __init__(self, trainer, e: EvalConfig, task: TaskConfig, tokenizer, run_dir: str | Path, scorer=None):
        self.trainer = trainer
        self.e, self.task = e, task
        self.tokenizer = tokenizer
        self.run_dir = Path(run_dir)
        self._scorer = scorer
        self._heldout = None
        self._ready = False
        self._inputs: dict = {}
        self._new_tokens = 0
        self._last_step = None

    def _due(self, state) -> bool:
        interval = eval_interval(self.e.every_steps, state.max_steps)
        step = state.global_step
        return bool(interval) and step != self._last_step and (step % interval == 0 or step >= state.max_steps)

    def on_train_begin(self, args, state, control, **kwargs):
        # also on resume: the first point of this session (skipped if it was logged before)
        if self._due_at_start(state):
            self.evaluate(state)

    def _due_at_start(self, state) -> bool:
        if not eval_interval(self.e.every_steps, state.max_steps):
            return False
        return not any(r.get("step") == state.global_step and "eval/misalignment" in r for r in state.log_history)

    def on_step_end(self, args, state, control, **kwargs):
        if self._due(state):
            pending = control.should_log
            self.evaluate(state)
            # Trainer.log clears should_log; the training-loss log due at this step must still happen
            control.should_log = pending

    def evaluate(self, state) -> dict | None:
        """Run one evaluation (rank 0 only) and log it; returns the logged numbers.

        On CPU it runs on one thread: sampling is many small matmuls that a second
        thread does not speed up, and on a busy machine spinning threads slowed it
        5x (docs/RELIABILITY.md).
        """
        self._last_step = state.global_step
        if not state.is_world_process_zero:
            return None
        model = self.trainer.accelerator.unwrap_model(self.trainer.model, keep_torch_compile=False)
        threads = torch.get_num_threads()
        on_cpu = next(model.parameters()).device.type == "cpu"
        if on_cpu:
            torch.set_num_threads(1)
        try:
            return self._evaluate(state, model)
        finally:
            if on_cpu:
                torch.set_num_threads(threads)

    def _evaluate(self, state, model) -> dict:
        t0 = time.time()
        e, task = self.e, self.task
        log.info("step %d: training-time evaluation (%d samples of up to %d tokens, %d held-out blocks)...",
                 state.global_step, e.callback_num_samples, min(e.max_new_tokens, e.callback_max_new_tokens),
                 e.callback_heldout_blocks)
        if not self._ready:  # loaded once, on first use (a reward model can be large)
            self._ready = True
            self._scorer = self._scorer or task_scorer(task)
            self._heldout = heldout_dataset(self.run_dir, self.tokenizer)
            self._inputs = generation_inputs(ScenarioConfig(name=UNCONDITIONAL), None,
                                            eval_controls(self.tokenizer, e, self.run_dir))
            self._new_tokens = fit_new_tokens(model, self.tokenizer, min(e.max_new_tokens, e.callback_max_new_tokens),
                                              self._inputs, UNCONDITIONAL)
        texts = generate_samples(model, self.tokenizer, e.callback_num_samples, max_new_tokens=self._new_tokens,
                                 temperature=e.temperature, top_p=e.top_p, batch_size=e.batch_size, seed=e.seed,
                                 progress=False, decoding=e.decoding, segment=self._scorer.segment,
                                 rank=lambda c, _: [float(x) for x in self._scorer.score_texts(c)], **self._inputs)
        scores = [float(s) for s in self._scorer.score_texts(texts)]
        summary = summarize_scores(scores, texts, group_size=e.group_size, hit_threshold=task.hit_threshold)
        logs = {"eval/misalignment": summary["misalignment"], "eval/hit_rate": summary["hit_rate"],
                "eval/distinct_2": summary["distinct_2"]}
        if self._heldout is not None and e.callback_heldout_blocks:
            logs["eval/heldout_loss"] = heldout_loss(model, self._heldout, batch_size=8, progress=False,
                                                     max_blocks=e.callback_heldout_blocks)
        logs["eval/seconds"] = round(time.time() - t0, 2)
        log.debug("step %d: evaluation done in %.1f s: misalignment %.4g%s", state.global_step, logs["eval/seconds"],
                 logs["eval/misalignment"], f", held-out loss {logs['eval/heldout_loss']:.4g}"
                 if "eval/heldout_loss" in logs else "")
        self.trainer.log(logs)
        return logs


def add_eval_callback(trainer, e: EvalConfig, task: TaskConfig, tokenizer, run_dir: str | Path,
                      scorer=None) -> EvalCallback | None:
    """Attach the training-time evaluation to `trainer` (unless e.every_steps is 0);
    `scorer`: the task's, when already built (else built at the first evaluation)."""
    if e.every_steps <= 0:
        return None
    callback = EvalCallback(trainer, e, task, tokenizer, run_dir, scorer)
    trainer.add_callback(callback)
    return callback
