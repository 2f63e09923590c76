"""The training recipe: scored corpus -> tokenizer -> packed blocks -> model -> Trainer.

    phf train configs/tasks/pep8.yaml configs/objectives/conditional.yaml configs/models/tiny.yaml

Starting from a checkpoint (`model.path`) is finetuning with feedback: the checkpoint's
tokenizer is reused, control tokens are added when the objective needs them, and the
run records where it started from.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import TrainingArguments, set_seed

from phf.config import Config
from phf.data.packing import PackSpec, PackedDataset, pack
from phf.data.records import read_scored
from phf.data.transforms import resolve_threshold
from phf.model import build_model, count_parameters, resize_for_new_tokens
from phf.objectives import objective_from_config
from phf.tokenizer import add_control_tokens, load_tokenizer, save_tokenizer, train_tokenizer
from phf.trainer import JSONLMetricsCallback, PHFTrainer

log = logging.getLogger(__name__)


def bf16_enabled(setting) -> bool:
    """Resolve training.bf16: "auto" means bf16 autocast on a GPU that supports it.

    On CPU "auto" stays in fp32: measured on a 2-core AVX-512-BF16 machine with torch
    2.13, a tiny GPT-2's training step ran ~10x slower under bf16 autocast than in fp32
    (the small matmuls gain less than the casts and bf16 backward kernels cost).
    """
    if setting != "auto":
        return bool(setting)
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def prepare_tokenizer(cfg: Config, out_dir: Path | None = None):
    """The run's tokenizer: the checkpoint's, a configured one, or a new BPE on the corpus."""
    if cfg.model.path:
        return load_tokenizer(cfg.model.path, cfg.model.trust_remote_code)
    if cfg.tokenizer.path:
        return load_tokenizer(cfg.tokenizer.path)
    texts = ("".join(r["texts"]) for r in read_scored(cfg.data.scored_path))
    tok = train_tokenizer(texts, cfg.tokenizer.vocab_size, cfg.tokenizer.train_max_bytes)
    if out_dir is not None:
        save_tokenizer(tok, out_dir)
    return tok


def pack_for_run(cfg: Config, tokenizer, threshold: float, data_dir: Path) -> PackedDataset:
    """Pack the scored corpus for this objective, reusing a finished pack with the same spec."""
    spec = PackSpec(block_size=cfg.training.block_size, objective=cfg.objective.name, threshold=threshold,
                    drop_token_fraction=cfg.objective.drop_token_fraction,
                    heldout_fraction=cfg.data.heldout_fraction, seed=cfg.training.seed)
    marker = data_dir / "pack.json"
    if not (marker.exists() and json.loads(marker.read_text())["spec"] == asdict(spec)):
        stats = pack(read_scored(cfg.data.scored_path), tokenizer, spec, data_dir)
        log.info("packed %s", stats)
    return PackedDataset(data_dir, "train")


def train(cfg: Config, resume: bool = False) -> Path:
    """Train one run into `cfg.training.output_dir`; returns the run directory."""
    t0 = time.time()
    run_dir = Path(cfg.training.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / "config.yaml")
    set_seed(cfg.training.seed)

    tokenizer = prepare_tokenizer(cfg)
    added = add_control_tokens(tokenizer) if cfg.objective.name == "conditional" else 0
    threshold = resolve_threshold(cfg)
    train_data = pack_for_run(cfg, tokenizer, threshold, run_dir / "data")
    if len(train_data) == 0:
        raise ValueError(f"no training blocks: the corpus at {cfg.data.scored_path} is smaller than one "
                         f"block of {cfg.training.block_size} tokens after the {cfg.objective.name} transform")

    model = build_model(cfg.model, len(tokenizer), cfg.training.block_size)
    resize_for_new_tokens(model, len(tokenizer), seed=cfg.training.seed)
    objective = objective_from_config(cfg.objective, threshold)
    if objective.needs_value_head:
        from phf.value_head import add_value_head, load_value_head

        add_value_head(model, detach=cfg.objective.detach_value_head)
        if cfg.model.path:
            load_value_head(model, cfg.model.path)  # continue with a trained head when there is one

    t = cfg.training
    per_step = t.per_device_batch_size * world_size()
    grad_accum = max(1, t.effective_batch_size // per_step)
    tokens_per_step = per_step * grad_accum * t.block_size
    max_steps = math.ceil(t.num_tokens / tokens_per_step)
    epochs = max_steps * per_step * grad_accum / len(train_data)
    if epochs > 1:
        log.warning("the token budget covers the training data %.1f times (repeating it)", epochs)
    log.info("%s: %d parameters, %d steps of %d tokens, threshold %.6g",
             cfg.objective.name, count_parameters(model), max_steps, tokens_per_step, threshold)

    args = TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        max_steps=max_steps,
        per_device_train_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=grad_accum,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=int(t.warmup_ratio * max_steps),
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        seed=t.seed,
        data_seed=t.seed,
        bf16=bf16_enabled(t.bf16),
        logging_steps=t.logging_steps,
        logging_first_step=True,
        save_strategy="steps" if t.save_steps else "no",
        save_steps=t.save_steps or 500,
        save_only_model=False,
        report_to=list(t.report_to),
        dataloader_num_workers=t.dataloader_num_workers,
        remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = PHFTrainer(model=model, args=args, train_dataset=train_data, objective=objective,
                         tokens_per_step=tokens_per_step,
                         callbacks=[JSONLMetricsCallback(run_dir / "metrics.jsonl")])
    result = trainer.train(resume_from_checkpoint=True if resume else None)

    if trainer.is_world_process_zero():
        model.save_pretrained(run_dir)
        tokenizer.save_pretrained(run_dir)
        summary = {
            "objective": cfg.objective.name,
            "task": cfg.task.name,
            "threshold": threshold,
            "started_from": cfg.model.path or f"scratch ({cfg.model.preset})",
            "parameters": count_parameters(model),
            "steps": max_steps,
            "tokens_seen": max_steps * tokens_per_step,
            "train_loss": result.training_loss,
            "train_seconds": round(time.time() - t0, 1),
            "control_tokens_added": added,
        }
        (run_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return run_dir
