"""`transformers.Trainer` with the loss routed through a phf `Objective`.

Going through Trainer is what makes `accelerate launch` / `torchrun` (DDP, FSDP,
DeepSpeed), checkpointing and resuming work without code of our own. We only change
how the loss is computed and what gets logged: each objective's statistics, and the
number of tokens seen, to the run's `metrics.jsonl` next to TensorBoard.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback

from phf.objectives import Objective


class PHFTrainer(Trainer):
    # our objectives return per-batch means; Trainer divides by the accumulation steps
    loss_is_scaled_for_ga = False

    def __init__(self, *args, objective: Objective, tokens_per_step: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.objective = objective
        self.tokens_per_step = tokens_per_step
        self._stats: dict[str, list[float]] = defaultdict(list)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        scores = inputs.get("token_scores")
        need_values = self.objective.needs_value_head
        outputs = model(input_ids=inputs["input_ids"], output_hidden_states=need_values, use_cache=False)
        values = None
        if need_values:
            from phf.value_head import compute_values

            values = compute_values(self.accelerator.unwrap_model(model), outputs.hidden_states[-1])
        result = self.objective(outputs.logits, labels, scores, values)
        if model.training:
            for k, v in result.stats.items():
                self._stats[k].append(float(v))
        return (result.loss, outputs) if return_outputs else result.loss

    def log(self, logs: dict, *args, **kwargs) -> None:
        if "loss" in logs:  # a training log: add objective stats averaged since the last one
            for k, values in self._stats.items():
                logs[f"objective/{k}"] = sum(values) / len(values)
            self._stats.clear()
        logs["tokens_seen"] = self.state.global_step * self.tokens_per_step
        super().log(logs, *args, **kwargs)


class JSONLMetricsCallback(TrainerCallback):
    """Appends every log (step, tokens seen, loss, objective stats) to metrics.jsonl."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

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
