"""phf's Python API: the command line's commands as functions (`docs/API.md`).

    import phf
    cfg = phf.config(["tasks/pep8", "objectives/conditional", "models/tiny"], {"data.scored_path": "scored.jsonl"})
    phf.score(cfg)
    run = phf.train(cfg)
    results = phf.evaluate(run)

Every function takes a config the way the command line does: a `phf.Config`, or config
names / paths (`"tasks/pep8"`, `"my.yaml"`) and `key=value` strings merged left to
right, plus `overrides`, a mapping of dotted keys to values (`{"training.seed": 1}`)
applied on top. Each is a thin wrapper over the function the command calls, and
returns what that function returns. This module sits on top of the layers, beside the
CLI; the heavy modules are imported inside each function, so that `import phf` stays
light.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from phf.config import Config, config_from_dict, deep_merge, load_config, parse_override

Settings = Config | str | Sequence[str]


def _nested(key: str, value: Any) -> dict:
    """"training.seed", 1 -> {"training": {"seed": 1}}."""
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def config(settings: Settings = (), overrides: Mapping[str, Any] | Sequence[str] | None = None) -> Config:
    """A validated run config: `settings` (a Config, or YAML names/paths and `key=value`
    strings, merged left to right) with `overrides` on top ({dotted key: value}, values
    taken as they are; or `key=value` strings, values parsed as YAML)."""
    if isinstance(settings, Config):
        raw = settings.to_dict()
    else:
        items = [settings] if isinstance(settings, str) else list(settings)
        files = [s for s in items if "=" not in s]
        raw = load_config(files, [s for s in items if "=" in s]).to_dict() if items else Config().to_dict()
    if isinstance(overrides, Mapping):
        for key, value in overrides.items():
            raw = deep_merge(raw, _nested(key, value))
    elif overrides:
        for text in [overrides] if isinstance(overrides, str) else overrides:
            raw = deep_merge(raw, parse_override(text))
    return config_from_dict(raw)


def score(settings: Settings, overrides=None, out: str | Path | None = None, *, workers: int | None = None,
          restart: bool = False, on_bad_record: str = "error") -> dict:
    """Segment and score the configured corpus (`data.*`) with the task's scorer into
    `out` (default `data.scored_path`), like `phf score`; returns the scoring summary
    (documents, segments, misaligned fraction, failures)."""
    from phf.config import check_paths
    from phf.data.scoring import score_dataset

    cfg = config(settings, overrides)
    check_paths(cfg, training=False)
    return score_dataset(cfg.data, cfg.task, out, num_workers=workers, restart=restart, on_bad=on_bad_record,
                         filtering_threshold=cfg.threshold if cfg.objective.name == "filtering" else None)


def train(settings: Settings, overrides=None, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Train one run into `training.output_dir`, like `phf train`; returns the run folder
    (a Hugging Face model folder with the run's config, metrics and model card)."""
    from phf.train import train as train_run

    return train_run(config(settings, overrides), resume=resume, overwrite=overwrite)


def evaluate(run_dir: str | Path, overrides=None, *, kl_reference: str | Path | None = None,
             lm_eval_tasks: list[str] | None = None) -> dict:
    """Evaluate a trained run with its saved config.yaml and `overrides` (e.g.
    {"eval.num_samples": 512}), like `phf eval`; writes and returns its results.json."""
    from phf.evaluation.evaluate import evaluate_run
    from phf.run_guard import check_trained

    run_dir = Path(run_dir)
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise FileNotFoundError(f"{run_dir}: no config.yaml; is this a phf run directory?")
    check_trained(run_dir)
    cfg = config([str(saved)], overrides)
    return evaluate_run(run_dir, cfg.eval, cfg.task, kl_reference=kl_reference, lm_eval_tasks=lm_eval_tasks)


def report(run_dirs: Sequence[str | Path], out: str | Path = "report.md", title: str = "phf report") -> str:
    """Compare evaluated runs, like `phf report`: writes `out` (Markdown), its .html twin
    and the figures beside it; returns the Markdown."""
    from phf.report import write_report

    return write_report(list(run_dirs), out, title=title)


def sweep(task: str = "pep8", out_dir: str | Path | None = None, objectives: Sequence[str] | None = None,
          finetune: str | None = "conditional", seeds: int | Sequence[int] | None = None, model: str = "tiny",
          scale: str | None = "demo", overrides: Sequence[str] = ()) -> str:
    """Every objective (default all six) on one task under one token budget, plus MLE then
    `finetune` (None: no finetuning row), like `phf sweep`; `seeds`: a count (from the
    configured training.seed) or a list. Returns the report's Markdown."""
    from phf.sweep import ALL_OBJECTIVES, SWEEP_CONFIGS, SweepRun, parse_seeds, run_config, run_sweep

    out = Path(out_dir or f"runs/sweep-{task}")
    if isinstance(seeds, int):
        first = run_config(task, out, SweepRun("mle", "mle"), list(overrides), model, scale,
                           extra_configs=SWEEP_CONFIGS)
        seeds = parse_seeds(str(seeds), first.training.seed)
    return run_sweep(task=task, out_dir=out, objectives=tuple(objectives or ALL_OBJECTIVES), finetune=finetune,
                     overrides=list(overrides), model=model, scale=scale,
                     seeds=list(seeds) if seeds is not None else None, extra_configs=SWEEP_CONFIGS)
