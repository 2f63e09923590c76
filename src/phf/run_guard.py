"""Checks that keep `phf train` and `phf eval` from silently mixing or losing runs.

* Training into a folder that holds a run is refused unless the user resumes it
  (`--resume`) or replaces it (`--overwrite`, which deletes its outputs first).
* A resume must train on what the checkpoint was trained on: the config (but for
  settings that do not change the training: evaluation, logging, checkpoint
  interval) and the scored input (`input_fingerprint`) are compared with the run's
  before anything is written, and every difference is listed.
* `phf eval` on a run whose training did not finish says so and how to resume it.
* After packing: an empty corpus, or a filter that removed every document, is named
  as the cause; a held-out split with no document is a warning (no held-out loss).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from phf.errors import ConfigError, DataError
from phf.records import scored_sources
from phf.runfiles import RunFiles, read_json
from phf.scorers import task_scorer
from phf.trainer import last_complete_checkpoint

log = logging.getLogger(__name__)

#: settings a resume may change: they do not change what is trained or how
RESUME_MAY_CHANGE = ("eval", "training.output_dir", "training.logging_steps", "training.save_steps",
                     "training.save_checkpoints", "training.save_total_limit", "training.report_to", "training.dataloader_num_workers")

#: bytes hashed at each end of each input file: cheap on terabytes, and an edit, an
#: append or a truncation changes the size or one of the ends
FINGERPRINT_BYTES = 1 << 20


class RunExistsError(ValueError):
    """The run folder holds a run that the command would overwrite or mix with."""


def _file_fingerprint(path: Path) -> dict:
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(FINGERPRINT_BYTES))
        if size > FINGERPRINT_BYTES:
            f.seek(max(FINGERPRINT_BYTES, size - FINGERPRINT_BYTES))
            h.update(f.read())
    return {"size": size, "sha256_ends": h.hexdigest()[:16]}


def input_fingerprint(scored_path, packed_path: str | None = None) -> dict:
    """{file name: {size, hash of its first and last MB}} for each file the run trains
    from: the blocks under `packed_path` when it is set (`phf pack`), else each file the
    scored input names (several paths, a glob, a folder of shards or of a saved dataset);
    a hub dataset is recorded by name."""
    out = {}
    for name in [packed_path] if packed_path else scored_sources(scored_path):
        p = Path(name).expanduser()
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p] if p.is_file() else []
        if not files:
            out[name] = {"hub": True}
        for f in files:
            out[str(f.resolve())] = _file_fingerprint(f)
    return out


def flat_keys(d, prefix: str = "") -> dict:
    """{dotted key: value} of a nested mapping."""
    if not isinstance(d, dict):
        return {prefix: d}
    out = {}
    for k, v in d.items():
        out.update(flat_keys(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_changes(old: dict, new: dict) -> list[str]:
    """The keys whose values differ between two config dicts, as "key: old -> new",
    without the keys a resume may change."""
    a, b = flat_keys(old), flat_keys(new)
    changes = []
    for key in sorted(set(a) | set(b)):
        if any(key == k or key.startswith(k + ".") for k in RESUME_MAY_CHANGE):
            continue
        if a.get(key) != b.get(key):
            changes.append(f"{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return changes


def input_changes(old: dict, new: dict) -> list[str]:
    changes = [f"{name}: no longer an input" for name in old if name not in new]
    changes += [f"{name}: new input" for name in new if name not in old]
    changes += [f"{name}: changed (size {old[name].get('size')} -> {new[name].get('size')})"
                for name in new if name in old and old[name] != new[name]]
    return changes


def _describe(paths: list[Path], folder: Path) -> str:
    names = [p.relative_to(folder).as_posix() + ("/" if p.is_dir() else "") for p in paths]
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def prepare_run_dir(cfg, resume: bool = False, overwrite: bool = False, main_process: bool = True) -> dict:
    """Check the run folder before `phf train` writes anything; returns the input's fingerprint.

    A folder with the outputs of a run is refused unless `resume` or `overwrite`; with
    `overwrite` the main process deletes them (config.yaml and data/ are rewritten or
    checked by the run itself). With `resume`, a config or input that differs from the
    run's is refused with the list of differences.
    """
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: resume continues the run in "
                          "training.output_dir, overwrite deletes it")
    files = RunFiles(cfg.training.output_dir)
    fingerprint = input_fingerprint(cfg.data.scored_path, cfg.data.packed_path)
    existing = files.outputs() if files.dir.is_dir() else []
    if resume:
        changes = []
        if files.config.is_file():
            changes += config_changes(files.read_config(), cfg.to_dict())
        old_input = read_json(files.input_fingerprint)
        if old_input is not None:
            changes += input_changes(old_input, fingerprint)
        if changes:
            raise RunExistsError(
                f"--resume: {files.dir} was trained with another config or data ({len(changes)} change"
                f"{'s' if len(changes) > 1 else ''}: {'; '.join(changes)}); resume with the run's own config "
                f"(`phf train {files.config} --resume`), or train into a new training.output_dir")
    elif existing and not overwrite:
        raise RunExistsError(
            f"{files.dir} already holds a run ({_describe(existing, files.dir)}); pass --resume to continue it, "
            "--overwrite to delete its outputs and train again, or set another training.output_dir")
    elif existing and main_process:
        described = _describe(existing, files.dir)
        files.clear_outputs()
        log.warning("--overwrite: deleted the outputs of the earlier run in %s: %s", files.dir, described)
    if main_process and not resume:
        old_input = read_json(files.input_fingerprint)
        if old_input is not None and old_input != fingerprint:
            # packed from other data: never reuse those blocks
            (files.data / "pack.json").unlink(missing_ok=True)
    return fingerprint


def check_packed(stats: dict, cfg, threshold: float | None = None) -> None:
    """After packing: name the real cause of an empty training split, warn about an empty held-out one.

    `stats` is pack.json's "stats" (documents, filtered_documents, blocks per split).
    """
    docs, blocks = stats.get("documents", {}), stats.get("blocks", {})
    total = sum(docs.values()) + stats.get("filtered_documents", 0)
    where = cfg.data.scored_path
    skipped = stats.get("records", {}).get("skipped") or {}
    if total == 0 and skipped:
        raise DataError(f"{where}: no documents left: --on-bad-record skip skipped every one of its "
                        f"{sum(skipped.values())} records ({', '.join(f'{n} {r}' for r, n in skipped.items())})")
    if total == 0:
        raise DataError(f"{where}: no documents (an empty corpus); score a corpus that has some "
                        "(`phf score` reports how many it read and skipped)")
    if docs.get("train", 0) == 0 and stats.get("filtered_documents", 0):
        raise DataError(f"filtering removed every training document ({stats['filtered_documents']} of "
                        f"{stats['filtered_documents']}): none has an avg_score at or below the threshold {threshold:.6g}; raise "
                        "objective.threshold (or task.thresholds.filtering, or use objective.percentile), or use "
                        "another corpus")
    if blocks.get("train", 0) == 0:
        raise DataError(f"no training blocks: the {docs.get('train', 0)} training documents of {where} hold fewer "
                        f"than one block of {cfg.training.block_size} tokens after the {cfg.objective.name} "
                        "transform; use a larger corpus or a smaller training.block_size")
    if cfg.data.heldout_fraction > 0 and blocks.get("heldout", 0) == 0:
        log.warning("no held-out block: data.heldout_fraction=%g of %d documents gave %d held-out documents "
                    "(%d tokens, less than one block of %d); the run will have no held-out loss. Raise "
                    "data.heldout_fraction or use a larger corpus", cfg.data.heldout_fraction, total,
                    docs.get("heldout", 0), stats.get("tokens", {}).get("heldout", 0), cfg.training.block_size)


def build_eval_scorer(cfg):
    """The task's scorer, built before any work when training-time evaluation needs it
    (a missing model or checkpoint must not surface after tokenizer training and
    packing); None when evaluation during training is off."""
    if cfg.eval.every_steps <= 0:
        return None
    try:
        return task_scorer(cfg.task)
    except (OSError, ImportError, ValueError, RuntimeError) as e:
        reason = " ".join(str(e).split())  # one line
        raise ConfigError(f"task.scorer {cfg.task.scorer!r} cannot be built ({type(e).__name__}: {reason}); "
                          "the training-time evaluation needs it: fix task.scorer_args, or set "
                          "eval.every_steps=0 to train without it") from None


MODEL_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def check_trained(run_dir: str | Path) -> None:
    """Raise a one-line error when `run_dir` holds a run whose training did not finish."""
    files = RunFiles(run_dir)
    if any((files.dir / f).is_file() for f in MODEL_FILES) and (files.dir / "config.json").is_file():
        return
    checkpoint = last_complete_checkpoint(files.checkpoints)
    where = f"the last complete checkpoint is {checkpoint}" if checkpoint else "it wrote no complete checkpoint"
    raise RunExistsError(f"{files.dir}: training did not finish (no model saved; {where}); continue it with "
                         f"`phf train {files.config} --resume`, then evaluate")
