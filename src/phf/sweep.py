"""Sweeps: several objectives on one task under the same token budget, then a report.

    phf demo                 MLE, filtering and conditional training (the demo)
    phf sweep --task pep8    all six objectives, plus MLE pretraining followed by
                             finetuning with conditional training (same total budget)

Stages: score the corpus -> train one tokenizer (shared, so held-out losses compare)
-> train each run -> evaluate it -> report. Every stage writes its output in
`out_dir` and is skipped when that output exists, so an interrupted sweep continues
where it stopped. Stage timings go to `timings.json`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from phf.config import CONFIG_DIR, Config, load_config

log = logging.getLogger(__name__)

DEMO_OBJECTIVES = ("mle", "filtering", "conditional")
ALL_OBJECTIVES = ("mle", "filtering", "conditional", "unlikelihood", "rwr", "awr")


@dataclass
class SweepRun:
    """One row of a sweep: a run name, its objective, and where it starts from."""

    name: str
    objective: str
    #: share of the sweep's token budget this run trains on
    budget_fraction: float = 1.0
    #: name of the run whose final model this one starts from (finetuning)
    start_from: str | None = None
    #: config overrides of this run only
    overrides: tuple[str, ...] = ()


def plan(objectives: tuple[str, ...], finetune: str | None = None, finetune_fraction: float = 0.5) -> list[SweepRun]:
    """The runs of a sweep. Finetuning with feedback = MLE on (1 - f) of the budget, then
    `finetune` on the remaining f, so its total budget equals the pretraining runs'."""
    runs = [SweepRun(o, o) for o in objectives]
    if finetune:
        pre = f"mle-{round(100 * (1 - finetune_fraction))}pct"
        runs += [SweepRun(pre, "mle", 1 - finetune_fraction),
                 SweepRun(f"mle+{finetune}-finetune", finetune, finetune_fraction, start_from=pre)]
    return runs


def objective_config(objective: str, task: str) -> str:
    """The task's reference config for an objective when there is one (awr-pep8), else the generic one.

    `task` is a task config name; its scale suffix is ignored ("toxicity-demo" -> toxicity).
    """
    for name in (task, task.split("-")[0]):
        specific = f"objectives/{objective}-{name}"
        if (CONFIG_DIR / f"{specific}.yaml").exists():
            return specific
    return f"objectives/{objective}"


def task_config(task: str, scale: str | None) -> str:
    """tasks/<task>-<scale> when the task has a config for that scale (toxicity-demo), else tasks/<task>."""
    if scale and (CONFIG_DIR / "tasks" / f"{task}-{scale}.yaml").exists():
        return f"tasks/{task}-{scale}"
    return f"tasks/{task}"


def conditioning_section(run_dirs: list[Path], attributes: list[str]) -> str:
    """Markdown: rows = (run, conditioning), columns = each attribute's misalignment."""
    lines = ["## Each attribute under each conditioning", "",
             "Mean misalignment of samples per attribute. A conditioning starts generation with the",
             "`<|attribute:aligned|>` tokens it names and forbids their `<|attribute:misaligned|>` tokens;",
             "the other attributes are left unspecified.", "",
             "| run | conditioning | " + " | ".join(f"{a} ↓" for a in attributes) + " |",
             "|---|---|" + "---:|" * len(attributes)]
    for run_dir in run_dirs:
        results = json.loads((Path(run_dir) / "results.json").read_text())
        for row in results.get("conditioning", []):
            lines.append(f"| {Path(run_dir).name} | {row['conditioning']} | "
                         + " | ".join(f"{row[a]:.5f}" for a in attributes) + " |")
    return "\n".join(lines) + "\n"


class _Timer:
    def __init__(self, path: Path):
        self.path = path
        self.times = json.loads(path.read_text()) if path.exists() else {}

    def run(self, stage: str, fn):
        t0 = time.time()
        out = fn()
        self.times[stage] = round(time.time() - t0, 1)
        self.path.write_text(json.dumps(self.times, indent=2))
        log.info("stage %s: %.1f s", stage, self.times[stage])
        return out


def run_config(task: str, out_dir: Path, run: SweepRun, overrides: list[str] = (), model: str = "tiny",
               scale: str | None = "demo") -> Config:
    files = [task_config(task, scale), objective_config(run.objective, task), f"models/{model}"]
    overrides = [*overrides, *run.overrides]
    base = load_config(files + ([scale] if scale else []), overrides)
    extra = [f"data.scored_path={out_dir / 'scored.jsonl'}",
             f"training.output_dir={out_dir / run.name}",
             f"training.num_tokens={max(1, int(base.training.num_tokens * run.budget_fraction))}"]
    if run.start_from:
        extra.append(f"model.path={out_dir / run.start_from}")
    else:
        extra.append(f"tokenizer.path={out_dir / 'tokenizer'}")
    return load_config(files + ([scale] if scale else []), [*overrides, *extra])


def run_sweep(task: str = "pep8", out_dir: str | Path = "runs/demo", objectives=DEMO_OBJECTIVES,
              finetune: str | None = None, overrides: list[str] = (), model: str = "tiny",
              scale: str | None = "demo", title: str | None = None) -> str:
    from phf.records import read_scored
    from phf.data.scoring import SIDECARS, score_corpus, sidecar
    from phf.data.sources import iter_documents
    from phf.evaluation.evaluate import evaluate_run
    from phf.report import write_report
    from phf.tokenizer import save_tokenizer, train_tokenizer
    from phf.train import train

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timer = _Timer(out_dir / "timings.json")
    t_start = time.time()
    runs = plan(tuple(objectives), finetune)
    base = run_config(task, out_dir, runs[0], overrides, model, scale)
    attributes = list(base.task.attributes)
    if len(attributes) > 1 and "conditional" in objectives:
        # next to conditional training on every attribute: one run per single attribute
        runs += [SweepRun(f"conditional-{a}", "conditional", overrides=(f"objective.attributes=[{a}]",))
                 for a in attributes]

    scored = Path(base.data.scored_path)
    if not scored.exists():
        partial = scored.with_suffix(".partial.jsonl")
        summary = timer.run("score", lambda: score_corpus(
            iter_documents(base.data), str(partial), base.task.scorer, base.task.scorer_args,
            num_workers=base.data.num_workers, threshold=base.task.misalignment_thresholds()))
        partial.rename(scored)  # only a finished corpus counts as scored
        for suffix in SIDECARS:  # its state, failures and lock go with it, as `phf score` leaves them
            if sidecar(partial, suffix).exists():
                sidecar(partial, suffix).rename(sidecar(scored, suffix))
        (out_dir / "scoring_summary.json").write_text(json.dumps(summary.to_dict(), indent=2))
        log.info("scored: %s", summary.to_dict())

    tok_dir = out_dir / "tokenizer"
    if not (tok_dir / "tokenizer.json").exists():
        timer.run("tokenizer", lambda: save_tokenizer(train_tokenizer(
            (r.document for r in read_scored(scored)),
            base.tokenizer.vocab_size, base.tokenizer.train_max_bytes), tok_dir))

    for run in runs:
        cfg = run_config(task, out_dir, run, overrides, model, scale)
        run_dir = Path(cfg.training.output_dir)
        if (run_dir / "results.json").exists():
            log.info("%s: already evaluated, skipping", run_dir)
            continue
        if not (run_dir / "train_summary.json").exists():
            timer.run(f"train/{run.name}", lambda: train(cfg, resume=True))  # a killed run continues
        timer.run(f"eval/{run.name}", lambda: evaluate_run(run_dir, cfg.eval, cfg.task))

    report_runs = [out_dir / r.name for r in runs]
    report = timer.run("report", lambda: write_report(report_runs, out_dir / "report.md",
                                                      title=title or f"phf sweep: {task}"))
    if len(attributes) > 1:
        section = conditioning_section(report_runs, attributes)
        with open(out_dir / "report.md", "a") as f:
            f.write("\n" + section)
        report += "\n" + section
    log.info("finished in %.1f s (this invocation); report: %s", time.time() - t_start, out_dir / "report.md")
    print(report)
    print("stage timings (s):", json.dumps(timer.times))
    return report
