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
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from transformers import TrainingArguments, set_seed

from phf.card import refresh_card
from phf.config import Config, check_paths
from phf.data.packed_shards import ShardedPackedDataset
from phf.data.packing import PackedDataset, PackSpec, pack
from phf.data.transforms import add_objective_tokens, resolve_threshold, transform_spec
from phf.evaluation.callback import add_eval_callback
from phf.evaluation.processors import aligned_generation_config
from phf.model import build_model, count_parameters, resize_for_new_tokens
from phf.model_config import ModelConfig, TokenizerConfig
from phf.errors import ConfigError
from phf.objective_config import SCHEDULE, phase_first_steps, phases_of, schedule_problems
from phf.objectives import objective_from_config
from phf.inputs import SourceStats
from phf.records import read_scored
from phf.run_lock import hold
from phf.runfiles import RunFiles, read_json, write_json
from phf.tokenizer import load_tokenizer, save_tokenizer, tokenizer_fingerprint, train_tokenizer
from phf.run_guard import build_eval_scorer, check_packed, prepare_run_dir
from phf.schedule import PhasedBlocks, PhaseSchedule
from phf.trainer import (JSONLMetricsCallback, PHFTrainer, checkpoint_interval, is_write_error,
                         last_complete_checkpoint, save_failed)
from phf.training_config import TrainingConfig
from phf.value_head import add_value_head, load_value_head

log = logging.getLogger(__name__)


def bf16_enabled(setting) -> bool:
    """Resolve training.bf16: "auto" means bf16 autocast on a GPU that supports it.

    On CPU "auto" stays in fp32: on this project's 2-core machines (AVX2, no bf16 units)
    torch 2.13 falls back to slow reference kernels for bf16 matmuls, and a tiny GPT-2's
    training step ran ~10x slower under bf16 autocast than in fp32 (bench/NOTES.md).
    """
    if setting != "auto":
        return bool(setting)
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def compile_enabled(setting) -> bool:
    """Resolve training.compile: "auto" means torch.compile on a GPU, eager on CPU."""
    if setting != "auto":
        return bool(setting)
    return torch.cuda.is_available()


def world_size() -> int:
    """Data-parallel replicas: the processes of a distributed launch (WORLD_SIZE, set by
    torchrun, `accelerate launch` and the deepspeed launcher), or, started without a
    launcher, the GPUs that Trainer drives from one process with DataParallel."""
    if "WORLD_SIZE" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    return max(1, torch.cuda.device_count())


def is_main_process() -> bool:
    """True outside a distributed launch, and on the process of global rank 0 in one."""
    return int(os.environ.get("RANK", "0")) == 0


#: how long the other processes wait for the main one to train the tokenizer and pack the
#: corpus (3.3B tokens can take longer than the process group's default 30 minutes)
PREPARE_TIMEOUT = timedelta(hours=24)


@contextmanager
def main_process_first(args: TrainingArguments):
    """The main process runs the body first while the others wait; then the others run it.

    Like `TrainingArguments.main_process_first(local=False)`, but the wait is on a gloo
    group of its own with a long timeout instead of a collective of the training
    process group (30 minutes by default). If the main process dies, the launcher
    (torchrun, accelerate, deepspeed) stops the others.
    """
    import torch.distributed as dist

    if args.world_size == 1 or not dist.is_initialized():
        yield
        return
    group = dist.new_group(backend="gloo", timeout=PREPARE_TIMEOUT)
    is_main = args.process_index == 0
    try:
        if not is_main:
            dist.barrier(group=group)
        yield
    finally:
        if is_main:
            dist.barrier(group=group)
        dist.destroy_process_group(group)


def sharded_parameters(trainer) -> str | None:
    """"FSDP" or "DeepSpeed ZeRO-3" when the trainer shards the parameters over the processes."""
    if trainer.is_fsdp_enabled:
        return "FSDP"
    if trainer.is_deepspeed_enabled and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3:
        return "DeepSpeed ZeRO-3"
    return None


def prepare_tokenizer(model: ModelConfig, tokenizer: TokenizerConfig, scored_path, attributes=(),
                      on_bad: str = "error"):
    """The run's tokenizer: the checkpoint's, a configured one, or a new BPE on the corpus
    (its records checked as packing checks them; skips are counted there)."""
    if model.path:
        return load_tokenizer(model.path, model.trust_remote_code)
    if tokenizer.path:
        return load_tokenizer(tokenizer.path)
    records = read_scored(scored_path, SourceStats(log_skips=False), on_bad, attributes=attributes)
    texts = (r.document for r in records)
    return train_tokenizer(texts, tokenizer.vocab_size, tokenizer.train_max_bytes)


def pack_spec(cfg: Config, tokenizer, threshold: float, on_bad: str = "error", objective=None) -> PackSpec:
    """What the packed blocks of this run depend on (a finished pack with the same spec is reused);
    `objective`: a schedule phase's (default: the run's)."""
    objective = objective or cfg.objective
    drop = cfg.drop_token_fraction_of(objective)
    attributes = {a: {"threshold": spec.threshold,
                      "drop_token_fraction": drop if spec.drop_token_fraction is None else spec.drop_token_fraction}
                  for a, spec in cfg.conditional_attributes(objective).items()}
    return PackSpec(block_size=cfg.training.block_size, objective=objective.name, threshold=threshold,
                    drop_token_fraction=drop, heldout_fraction=cfg.data.heldout_fraction, seed=cfg.training.seed,
                    heldout_seed=cfg.data.heldout_seed,
                    attributes=attributes, combine=cfg.task.combine, combine_weights=cfg.task.combine_weights,
                    tokenizer=tokenizer_fingerprint(tokenizer), on_bad_record=on_bad,
                    transform=transform_spec(objective, cfg.task, cfg.data.scored_path, on_bad))


def pack_for_run(spec: PackSpec, tokenizer, scored_path, data_dir: Path, may_pack: bool = True,
                 attributes=()) -> PackedDataset:
    """Pack the scored corpus with `spec`, reusing a finished pack with the same spec.

    Each record is checked as it is read (with the task's `attributes`); a bad one stops
    the packing or is counted in pack.json's stats ("records"), by `spec.on_bad_record`.
    `may_pack=False` (the other ranks of a distributed run, after the main process
    packed): only a finished pack is accepted.
    """
    marker = data_dir / "pack.json"
    try:
        # a key missing from an older pack.json had its default then
        packed = {**asdict(PackSpec()), **json.loads(marker.read_text())["spec"]} == asdict(spec)
    except (OSError, ValueError, KeyError, TypeError):  # absent, or half-written by a killed run
        packed = False
    if not packed and not may_pack:
        raise RuntimeError(f"{data_dir}: the main process packed the data, but this process finds no finished "
                           "pack there; the run directory must be on a filesystem shared by all processes")
    if not packed:
        marker.unlink(missing_ok=True)  # pack() writes it last: no marker, no finished pack
        source = SourceStats()
        records = read_scored(scored_path, source, spec.on_bad_record, attributes=attributes)
        stats = pack(records, tokenizer, spec, data_dir, source=source)
        if sum(source.skipped.values()):
            log.warning("skipped %d bad scored records of %d (%s)", sum(source.skipped.values()), source.records_in,
                        ", ".join(f"{n} {reason}" for reason, n in source.skipped.items()))
        log.info("packed %d training and %d held-out documents (%d filtered out): %d and %d tokens, "
                 "%d and %d blocks", stats.documents["train"], stats.documents["heldout"], stats.filtered_documents,
                 stats.tokens["train"], stats.tokens["heldout"], stats.blocks["train"], stats.blocks["heldout"])
    return PackedDataset(data_dir, "train")


def train(cfg: Config, resume: bool = False, overwrite: bool = False, on_bad: str = "error") -> Path:
    """Train one run into `cfg.training.output_dir`; returns the run directory.

    A folder that holds a run is refused unless `resume` (same config and data) or
    `overwrite` (its outputs are deleted first): see `phf.run_guard`. `on_bad`: a bad
    scored record stops training ("error") or is counted and left out ("skip"; the counts
    are in train_summary.json's "records"), as in `phf score --on-bad-record`. The main process
    holds the folder's lock (`phf.run_lock`) meanwhile: a second writer is refused.
    """
    check_paths(cfg)  # a missing file is an error now, not after packing (and before the folder exists)
    if not is_main_process():
        return _train(cfg, resume, overwrite, on_bad)
    with hold(cfg.training.output_dir, "phf train"):
        return _train(cfg, resume, overwrite, on_bad)


# --- the stages of the recipe: folder -> steps -> arguments -> data -> model -> trainer -> save

def _train(cfg: Config, resume: bool, overwrite: bool, on_bad: str) -> Path:
    t0 = time.time()
    files, fingerprint, scorer = prepare_folder(cfg, resume, overwrite)
    steps = plan_steps(cfg.training)
    if problems := schedule_problems(cfg.objective, steps.max_steps):  # with this launch's replicas
        raise ConfigError(problems)
    args = training_arguments(cfg.training, files, steps)
    data = prepare_data(cfg, args, files, fingerprint, steps, resume, on_bad)
    model = prepare_model(cfg, data)
    trainer = build_trainer(cfg, model, args, data, steps, files, scorer)
    parameters = count_parameters(model)  # before training wraps (and perhaps shards) the model
    result, checkpoint = run_training(trainer, args, resume)
    save_model(trainer, model, data.tokenizer, files)
    if trainer.is_world_process_zero():
        write_json(files.train_summary, train_summary(cfg, data, steps, parameters, result, checkpoint, t0))
        refresh_card(files.dir)  # README.md: the model card, rewritten by phf eval with the results
    return files.dir


def prepare_folder(cfg: Config, resume: bool, overwrite: bool):
    """The run folder checked (`phf.run_guard`) and made, the scorer of the training-time
    evaluation built before any work (its files too), and the seed set."""
    fingerprint = prepare_run_dir(cfg, resume, overwrite, main_process=is_main_process())
    scorer = build_eval_scorer(cfg) if is_main_process() else None
    files = RunFiles(cfg.training.output_dir)
    files.dir.mkdir(parents=True, exist_ok=True)
    set_seed(cfg.training.seed)
    return files, fingerprint, scorer


@dataclass
class StepPlan:
    """The token budget as optimizer steps; batch and budget are global: per-device batch
    x gradient accumulation x replicas."""

    per_step: int  # sequences per micro-step, over all replicas
    grad_accum: int
    tokens_per_step: int
    max_steps: int


def plan_steps(t: TrainingConfig) -> StepPlan:
    per_step = t.per_device_batch_size * world_size()
    grad_accum = max(1, t.effective_batch_size // per_step)
    if per_step * grad_accum != t.effective_batch_size:
        log.warning("training.effective_batch_size=%d is not a multiple of per_device_batch_size x %d replicas; "
                    "each step takes %d sequences", t.effective_batch_size, world_size(), per_step * grad_accum)
    tokens_per_step = per_step * grad_accum * t.block_size
    return StepPlan(per_step, grad_accum, tokens_per_step, math.ceil(t.num_tokens / tokens_per_step))


def training_arguments(t: TrainingConfig, files: RunFiles, steps: StepPlan) -> TrainingArguments:
    """Trainer's arguments; built before any work: under torchrun / accelerate launch they
    join the process group."""
    compiled = compile_enabled(t.compile)
    max_steps = steps.max_steps
    args = TrainingArguments(
        output_dir=str(files.checkpoints),
        max_steps=max_steps,
        per_device_train_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=steps.grad_accum,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=int(t.warmup_ratio * max_steps),
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        seed=t.seed,
        data_seed=t.seed,
        bf16=bf16_enabled(t.bf16),
        torch_compile=compiled,
        # a last, smaller batch of an epoch would make the compiled graph recompile
        dataloader_drop_last=compiled,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        save_strategy="steps" if checkpoint_interval(t.save_steps, max_steps, t.save_checkpoints) else "no",
        save_steps=checkpoint_interval(t.save_steps, max_steps) or 500,
        save_total_limit=t.save_total_limit,
        save_only_model=False,
        report_to=list(t.report_to),
        dataloader_num_workers=t.dataloader_num_workers,
        remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(),
    )
    if args.train_batch_size * args.world_size != steps.per_step:
        raise RuntimeError(f"Trainer runs {args.world_size} process(es) of {args.train_batch_size} sequences, "
                           f"not the {steps.per_step} per micro-step the token budget was planned with")
    return args


@dataclass
class PhaseData:
    """One phase of the run: its objective from `first_step` (0-based) on, and its blocks.
    A run without a schedule has one phase, from step 0."""

    start: float
    first_step: int
    objective: Any  # the phase's objective config
    threshold: float
    spec: PackSpec
    data: Any  # PackedDataset or ShardedPackedDataset
    data_dir: Path  # where the blocks are
    #: the scored records read and skipped (pack.json's "records"; None for `phf pack` folders)
    records: dict | None = None


@dataclass
class RunData:
    tokenizer: Any
    added: int  # control tokens added to the tokenizer
    phases: list[PhaseData]


def prepare_data(cfg: Config, args: TrainingArguments, files: RunFiles, fingerprint: dict, steps: StepPlan,
                 resume: bool, on_bad: str) -> RunData:
    """The tokenizer and each phase's packed blocks. The main process writes the
    tokenizer and the packed blocks; the others wait, then read them."""
    is_main = args.process_index == 0
    with main_process_first(args):
        if is_main:
            cfg.save(files.config)
            files.data.mkdir(parents=True, exist_ok=True)
            write_json(files.input_fingerprint, fingerprint)
        tokenizer = run_tokenizer(cfg, files, resume, is_main, on_bad)
        added = add_run_tokens(cfg, tokenizer, [o for _, o in phases_of(cfg.objective)])
        phases = pack_phases(cfg, tokenizer, steps, files, is_main, on_bad)
    for phase in phases:
        if cfg.data.packed_path:
            if len(phase.data) == 0:
                raise ValueError(f"no training blocks in the packed shards at {cfg.data.packed_path}")
        else:  # names the real cause: an empty corpus, a threshold that filters everything, a tiny corpus
            pack_stats = read_json(phase.data_dir / "pack.json")["stats"]
            check_packed(pack_stats, cfg, phase.threshold)
            phase.records = pack_stats.get("records")
    return RunData(tokenizer, added, phases)


def run_tokenizer(cfg: Config, files: RunFiles, resume: bool, is_main: bool, on_bad: str):
    """The tokenizer the blocks are (or were) made with, saved in the run's data/tokenizer."""
    tok_dir = files.tokenizer
    if cfg.data.packed_path:  # packed by `phf pack`: its tokenizer made the blocks
        tokenizer = load_tokenizer(str(Path(cfg.data.packed_path) / "tokenizer"))
    elif (resume or not is_main) and (tok_dir / "tokenizer.json").exists():
        return load_tokenizer(str(tok_dir))  # the one the packed blocks were made with
    else:
        # every scored record must have the task's attributes
        tokenizer = prepare_tokenizer(cfg.model, cfg.tokenizer, cfg.data.scored_path, list(cfg.task.attributes),
                                      on_bad)
    if is_main:
        save_tokenizer(tokenizer, tok_dir)
    return tokenizer


def add_run_tokens(cfg: Config, tokenizer, objectives: list) -> int:
    """The special tokens the objectives' data uses (conditional training's control
    tokens, ...), added to `tokenizer`; returns how many were new."""
    return sum(add_objective_tokens(tokenizer, o, list(cfg.conditional_attributes(o)) or None) for o in objectives)


def pack_phases(cfg: Config, tokenizer, steps: StepPlan, files: RunFiles, is_main: bool,
                on_bad: str) -> list[PhaseData]:
    """Each phase's threshold and blocks: `phf pack` shards, or the run's own packing. The
    last phase packs into data/ (its held-out blocks are the run's held-out set); an
    earlier phase whose blocks differ from those into data/phase-<first step>/."""
    phases = phases_of(cfg.objective)
    firsts = phase_first_steps([s for s, _ in phases], steps.max_steps)
    # `phf pack` folders were checked when packed: their spec has the default policy
    policy = "error" if cfg.data.packed_path else on_bad
    thresholds = [resolve_threshold(o, cfg.task, cfg.data.scored_path, on_bad) for _, o in phases]
    specs = [pack_spec(cfg, tokenizer, t, policy, o) for t, (_, o) in zip(thresholds, phases)]
    if cfg.data.packed_path:  # every process reads the packed shards; none packs
        datasets = [ShardedPackedDataset(cfg.data.packed_path, "train", expected_spec=asdict(spec)) for spec in specs]
        return [PhaseData(s, f, o, t, spec, d, Path(cfg.data.packed_path))
                for (s, o), f, t, spec, d in zip(phases, firsts, thresholds, specs, datasets)]
    # data/ is packed anew (from other data, or for the first time): so is every phase
    repack = is_main and not (files.data / "pack.json").exists()
    folders, out = {}, []
    for (start, objective), first, threshold, spec in zip(phases, firsts, thresholds, specs):
        key = json.dumps(asdict(spec), sort_keys=True)
        if key not in folders:
            folders[key] = files.data if spec == specs[-1] else files.data / f"phase-{first}"
            if repack and folders[key] != files.data:
                (folders[key] / "pack.json").unlink(missing_ok=True)
        data = pack_for_run(spec, tokenizer, cfg.data.scored_path, folders[key], may_pack=is_main,
                            attributes=list(cfg.task.attributes))
        out.append(PhaseData(start, first, objective, threshold, spec, data, folders[key]))
    return out


def prepare_model(cfg: Config, data: RunData):
    """The model, its vocabulary grown for the added tokens (from a checkpoint they start
    at the mean of the trained rows), and a value head when an objective needs one."""
    tokenizer = data.tokenizer
    model = build_model(cfg.model, len(tokenizer), cfg.training.block_size)
    resize_for_new_tokens(model, len(tokenizer), seed=cfg.training.seed,
                          old_vocab_size=len(tokenizer) - data.added if cfg.model.path else None,
                          pad_to_multiple_of=cfg.model.pad_vocab_to_multiple_of)
    heads = [p.objective for p in data.phases if objective_from_config(p.objective, p.threshold).needs_value_head]
    if heads:
        add_value_head(model, detach=heads[0].detach_value_head, kind=heads[0].value_head)
        if cfg.model.path:
            load_value_head(model, cfg.model.path)  # continue with a trained head when there is one
    return model


def build_trainer(cfg: Config, model, args: TrainingArguments, data: RunData, steps: StepPlan, files: RunFiles,
                  scorer) -> PHFTrainer:
    """PHFTrainer over the blocks, with each phase's loss, metrics.jsonl and the
    training-time evaluation."""
    phases = data.phases
    objectives = [objective_from_config(p.objective, p.threshold) for p in phases]
    if len(phases) == 1:
        train_data, schedule = phases[0].data, None
    else:
        schedule = PhaseSchedule([p.first_step for p in phases], objectives, [p.objective.name for p in phases])
        folders = list(dict.fromkeys(p.data_dir for p in phases))  # phases with the same blocks share them
        train_data = PhasedBlocks([next(p.data for p in phases if p.data_dir == f) for f in folders],
                                  [folders.index(p.data_dir) for p in phases], schedule, steps.max_steps,
                                  steps.per_step * steps.grad_accum, cfg.training.seed)
    epochs = steps.max_steps * steps.per_step * steps.grad_accum / len(train_data)
    if epochs > 1:
        log.warning("the token budget covers the training data %.1f times (repeating it)", epochs)
    log.info("%s: %d parameters, %d steps of %d tokens, threshold %s", run_objective_name(cfg),
             count_parameters(model), steps.max_steps, steps.tokens_per_step,
             ", ".join(f"{p.threshold:.6g}" for p in phases))
    trainer = PHFTrainer(model=model, args=args, train_dataset=train_data, objective=objectives[0],
                         tokens_per_step=steps.tokens_per_step, schedule=schedule,
                         callbacks=[JSONLMetricsCallback(files.metrics)])
    if cfg.eval.every_steps and sharded_parameters(trainer):
        log.warning("training-time evaluation is off: it generates on rank 0 alone, and under %s no process holds "
                    "the whole model; evaluate the saved run with `phf eval`", sharded_parameters(trainer))
    else:
        add_eval_callback(trainer, cfg.eval, cfg.task, data.tokenizer, files.dir, scorer=scorer)
    return trainer


def run_objective_name(cfg: Config) -> str:
    """The run's objective as train_summary.json names it: "mle>conditional@0.2" for a schedule."""
    return cfg.objective.label() if cfg.objective.name == SCHEDULE else cfg.objective.name


def run_training(trainer: PHFTrainer, args: TrainingArguments, resume: bool):
    """Train, from the last complete checkpoint with `resume`; returns (result, checkpoint)."""
    checkpoint = last_complete_checkpoint(args.output_dir) if resume else None
    if resume and checkpoint is None:
        log.warning("--resume: no complete checkpoint in %s; training from the start", args.output_dir)
    elif checkpoint is not None:
        log.info("resuming from %s", checkpoint)
    return trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None), checkpoint


def save_model(trainer: PHFTrainer, model, tokenizer, files: RunFiles) -> None:
    """The model and tokenizer into the run folder. Every process takes part: under FSDP /
    DeepSpeed ZeRO-3 the weights are gathered to rank 0 first, which alone writes
    model.safetensors (the value head included)."""
    # a conditional run's generation_config.json never lets plain `generate` sample a control token
    aligned_generation_config(model, tokenizer)
    try:
        trainer.save_model(str(files.dir))
        if trainer.is_world_process_zero():
            tokenizer.save_pretrained(files.dir)
    except Exception as e:
        if not is_write_error(e):
            raise
        raise save_failed(e, f"the model into {files.dir}", files.checkpoints) from None


def train_summary(cfg: Config, data: RunData, steps: StepPlan, parameters: int, result, checkpoint,
                  t0: float) -> dict:
    """train_summary.json: what was trained, on what, for how long."""
    last = data.phases[-1]
    summary = {
        "objective": run_objective_name(cfg),
        "task": cfg.task.name,
        "seed": cfg.training.seed,
        "threshold": last.threshold,
        "started_from": cfg.model.path or f"scratch ({cfg.model.preset})",
        "parameters": parameters,
        "steps": steps.max_steps,
        "tokens_seen": steps.max_steps * steps.tokens_per_step,
        # with a resume, the mean over the steps since `resumed_from` (Trainer's train_loss)
        "train_loss": result.training_loss,
        "resumed_from": str(checkpoint) if checkpoint else None,
        "train_seconds": round(time.time() - t0, 1),
        "control_tokens_added": data.added,
        "transform": last.spec.transform,  # a conditioning form's quantile edges, masking's hide
        # the corpus trained on, and its records read and skipped (by reason) under --on-bad-record
        "scored_path": cfg.data.scored_path,
        "packed_path": cfg.data.packed_path,
        "records": last.records,
    }
    if cfg.objective.name == SCHEDULE:  # which steps each phase trained (1-based, as metrics.jsonl's "step")
        ends = [p.first_step for p in data.phases[1:]] + [steps.max_steps]
        summary["schedule"] = [
            {"phase": i, "objective": p.objective.name, "start": p.start, "first_step": p.first_step + 1,
             "last_step": end, "tokens": (end - p.first_step) * steps.tokens_per_step, "threshold": p.threshold,
             "transform": p.spec.transform}
            for i, (p, end) in enumerate(zip(data.phases, ends))]
    return summary
