"""Timed training runs for the benchmarks: phf's PHFTrainer and a plain transformers.Trainer.

Both get a fresh model from the same preset and seed, the same packed blocks, batch,
dtype and TrainingArguments; the plain Trainer lets the model compute its own
causal-LM loss from `labels` (what a user of transformers would write). A run takes
`warmup + steps` optimizer steps; throughput counts the steps after the warm-up,
from the end of the last warm-up step to the end of the last step (data loading,
forward, loss, backward, optimizer: everything Trainer does in a step).
"""

from __future__ import annotations

import tempfile
import time

import common  # noqa: F401  (sets up sys.path and the environment)
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from phf.config import ModelConfig
from phf.data.packing import PackedDataset
from phf.model import build_model, resize_for_new_tokens
from phf.objectives import build_objective
from phf.trainer import PHFTrainer


class _StepClock(TrainerCallback):
    """The wall-clock time at the end of each optimizer step.

    On a GPU the steps run asynchronously, so the clock waits for the device at the
    end of the warm-up and of the last step (the two times the throughput uses) and
    nowhere else: a wait at every step would stall the launch of the next one.
    """

    def __init__(self, sync_at: tuple[int, ...] = ()):
        self.times: list[float] = []
        self.sync_at = set(sync_at)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in self.sync_at and torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())


class _LMOnly(torch.utils.data.Dataset):
    """input_ids and labels only: what a plain causal-LM Trainer run gets."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        item = self.ds[i]
        return {"input_ids": item["input_ids"], "labels": item["labels"]}


def make_model(preset: str, vocab: int, block_size: int, seed: int = 0, config_overrides: dict | None = None):
    torch.manual_seed(seed)
    model = build_model(ModelConfig(preset=preset, config_overrides=dict(config_overrides or {})), vocab, block_size)
    return model


def training_args(out_dir: str, steps: int, batch_size: int, bf16: bool = False, **kw) -> TrainingArguments:
    return TrainingArguments(
        output_dir=out_dir, max_steps=steps, per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=1, learning_rate=1e-3, lr_scheduler_type="cosine", warmup_steps=0,
        weight_decay=0.1, max_grad_norm=1.0, seed=0, data_seed=0, bf16=bf16, logging_steps=10 ** 6,
        save_strategy="no", report_to=[], dataloader_num_workers=0, remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(), disable_tqdm=True, **kw)


def timed_run(kind: str, dataset_dir, tokenizer, preset: str, *, batch_size: int, warmup: int = 1,
              steps: int = 4, objective: str = "mle", bf16: bool = False, threshold: float = 0.0,
              config_overrides: dict | None = None, return_trainer: bool = False,
              compile: bool = False, repeat_data: bool = False) -> dict:
    """One timed run; kind = "phf" or "hf" (the plain transformers.Trainer baseline).

    `compile`: torch.compile the model (TrainingArguments.torch_compile, what phf's
    `training.compile` sets) on both sides; the warm-up steps then include compiling.
    `repeat_data`: let a long run go over the packed blocks more than once.
    """
    shape = common.PRESET_SHAPES[preset]
    ds = PackedDataset(dataset_dir, "train")
    total = warmup + steps
    assert repeat_data or len(ds) >= total * batch_size, f"need {total * batch_size} blocks, have {len(ds)}"
    model = make_model(preset, len(tokenizer), shape["block_size"], config_overrides=config_overrides)
    if objective == "conditional":
        resize_for_new_tokens(model, len(tokenizer))
    clock = _StepClock(sync_at=(warmup, total))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        # as phf train: a compiled run drops an epoch's last, smaller batch (no recompiling)
        args = training_args(tmp, total, batch_size, bf16=bf16, torch_compile=compile, dataloader_drop_last=compile)
        if kind == "hf":
            trainer = Trainer(model=model, args=args, train_dataset=_LMOnly(ds), callbacks=[clock])
        else:
            obj_kwargs = {"unlikelihood": dict(threshold=threshold, alpha=0.01),
                          "awr": dict(alpha=0.05, beta=1.0), "rwr": dict(beta=10.0)}.get(objective, {})
            obj = build_objective(objective, **obj_kwargs)
            if obj.needs_value_head:
                from phf.value_head import add_value_head

                add_value_head(model)
            trainer = PHFTrainer(model=model, args=args, train_dataset=ds, objective=obj,
                                 tokens_per_step=batch_size * shape["block_size"], callbacks=[clock])
        t0 = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t0
    times = clock.times
    tokens = steps * batch_size * shape["block_size"]
    seconds = times[-1] - times[warmup - 1] if warmup else times[-1] - t0
    out = {"tokens_per_s": tokens / seconds, "seconds_per_step": seconds / steps, "wall_s": wall,
           "params": sum(p.numel() for p in model.parameters())}
    if torch.cuda.is_available():
        out["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 2 ** 30
    if return_trainer:
        out["trainer"] = trainer
    return out
