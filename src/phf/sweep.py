"""Sweeps: several objectives on one task under the same token budget, then a report.

    phf demo                 MLE, filtering and conditional training (the demo)
    phf sweep --task pep8    all six objectives, plus MLE pretraining followed by
                             finetuning with conditional training (same total budget)

Stages: score the corpus -> train one tokenizer (shared, so held-out losses compare)
-> train each run -> evaluate it -> report. Every stage writes its output in
`out_dir` and is skipped when that output exists, so an interrupted sweep continues
where it stopped. Stage timings go to `timings.json`.

Seeds (`phf sweep --seeds 3`, or `--seeds 1,2,3`): every run is trained and evaluated
once per seed. A seed sets training.seed (the model's initialisation, the data order,
the control-token drops) and eval.seed (sampling); data.heldout_seed stays fixed (the
configured one, else the configured training.seed), so every seed holds out the same
documents and the held-out losses compare. Folders: `out_dir/<run>/seed-<s>`; a
one-seed sweep keeps `out_dir/<run>`, and a later sweep with more seeds takes such a
folder as its seed's run where it is (its config.yaml says which seed it is), so it is
not trained again. A finetuning run starts from the MLE run of its own seed.

Intervention timing (`phf sweep --start-at 0,0.2,0.6`): next to MLE, one run per
objective and start point s: MLE until s of the token budget, then the objective, in one
run (one optimizer, one learning-rate schedule: `objective.name: schedule`); s = 0 is
the objective from the first token. The report's "intervention timing" section puts
them side by side, with the finetuning row (a new optimizer after MLE) when there is one.

KL: when MLE is among the runs, each run of a seed is evaluated with
KL(MLE of that seed || run) (eval.kl_reference), so the report can plot misalignment
against KL as well as against held-out loss; runs evaluated before without KL get it
added on the next invocation.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from phf.config import CONFIG_DIR, OBJECTIVES, Config, load_config, merged_settings, parse_override
from phf.data.scoring import score_dataset, summary_path
from phf.errors import ConfigError
from phf.evaluation.evaluate import add_kl, evaluate_run
from phf.records import read_scored
from phf.report import write_report
from phf.run_guard import flat_keys
from phf.runfiles import RunFiles, read_json, write_json
from phf.tokenizer import save_tokenizer, train_tokenizer
from phf.train import train

log = logging.getLogger(__name__)

DEMO_OBJECTIVES = ("mle", "filtering", "conditional")
#: configs `phf sweep` applies on top of its scale (the number of evaluation samples; see the file)
SWEEP_CONFIGS = ("scales/sweep",)
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
    #: MLE until this fraction of the budget, then `objective`, in one run (0: `objective` from the start)
    start_at: float | None = None


def plan(objectives: tuple[str, ...], finetune: str | None = None, finetune_fraction: float = 0.5,
         start_at: list[float] | None = None) -> list[SweepRun]:
    """The runs of a sweep, MLE first (it is the other runs' KL reference). Finetuning with
    feedback = MLE on (1 - f) of the budget, then `finetune` on the remaining f, so its
    total budget equals the pretraining runs'. `start_at`: instead of one run per
    objective, one per objective and start point (`<objective>@<start>`), next to MLE."""
    check_objective_names(objectives, finetune)
    if start_at:
        runs = [SweepRun("mle", "mle")] + [SweepRun(f"{o}@{s:g}", o, start_at=s)
                                           for o in objectives if o != "mle" for s in start_at]
    else:
        runs = [SweepRun(o, o) for o in sorted(objectives, key=lambda o: o != "mle")]
    if finetune:
        pre = f"mle-{round(100 * (1 - finetune_fraction))}pct"
        runs += [SweepRun(pre, "mle", 1 - finetune_fraction),
                 SweepRun(f"mle+{finetune}-finetune", finetune, finetune_fraction, start_from=pre)]
    return runs


def check_objective_names(objectives, finetune: str | None = None) -> None:
    """A ConfigError naming each --objectives / --finetune name that is neither an objective
    nor an objective config (`configs/objectives/<name>.yaml`: conditional-quantiles,
    conditional-cooldown, ...), before any data is read."""
    named = [("--objectives", o) for o in objectives] + ([("--finetune", finetune)] if finetune else [])
    problems = [f"{flag}: {name!r} is not an objective ({', '.join(OBJECTIVES)}) or an objective config "
                f"under {CONFIG_DIR / 'objectives'}" for flag, name in named
                if name not in OBJECTIVES and not (CONFIG_DIR / "objectives" / f"{name}.yaml").is_file()]
    if problems:
        raise ConfigError(problems)


def parse_start_at(text: str) -> list[float]:
    """`--start-at 0,0.2,0.6`: distinct fractions of the token budget in [0, 1), in order."""
    try:
        starts = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        starts = []
    if not starts or len(set(starts)) != len(starts) or not all(0 <= s < 1 for s in starts):
        raise ConfigError(f"--start-at {text!r}: expected distinct fractions of the token budget in [0, 1), "
                          "comma-separated (e.g. 0,0.2,0.6)")
    return sorted(starts)


def start_at_override(objective: str, task: str, start: float) -> str:
    """The `objective=` override of a start-point run: MLE until `start`, then `objective`
    with the settings of its config file for the task (`objective_config`)."""
    settings = merged_settings([objective_config(objective, task)]).get("objective") or {"name": objective}
    phases = [{"start": 0.0, "objective": {"name": "mle"}}, {"start": start, "objective": settings}]
    return "objective=" + json.dumps({"name": "schedule", "phases": phases})


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


def parse_seeds(text: str, first: int) -> list[int]:
    """`--seeds`: a count N gives N seeds from `first` on (first, first + 1, ...); a
    comma-separated list gives those seeds ("1,2,3"; "7," is the one seed 7)."""
    try:
        if "," in text:
            seeds = [int(x) for x in text.split(",") if x.strip()]
        else:
            count = int(text)
            if count < 1:
                raise ValueError
            seeds = list(range(first, first + count))
    except ValueError:
        raise ValueError(f"--seeds {text!r}: expected a count >= 1 or a comma-separated list of seeds") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text!r}: expected distinct seeds")
    return seeds


def seed_dir(out_dir: Path, name: str, seed: int, one_seed: bool) -> Path:
    """The folder of run `name` at `seed`: `<name>/seed-<seed>`, or `<name>` itself when
    the run there is of this seed (a one-seed sweep's layout), or when this is a one-seed
    sweep and that folder holds no run yet."""
    flat = out_dir / name
    nested = flat / f"seed-{seed}"
    if nested.exists():
        return nested
    if RunFiles(flat).config.exists():
        return flat if RunFiles(flat).seed() == seed else nested
    return flat if one_seed and not any(flat.glob("seed-*")) else nested


class _Timer:
    def __init__(self, path: Path):
        self.path = path
        self.times = read_json(path) or {}

    def run(self, stage: str, fn):
        t0 = time.time()
        out = fn()
        self.times[stage] = round(time.time() - t0, 1)
        write_json(self.path, self.times)
        log.info("stage %s: %.1f s", stage, self.times[stage])
        return out


#: settings that the sweep sets for each run: a user's value would be replaced, so it is refused, saying why
RECIPE_SETTINGS = {
    "training.output_dir": "each run trains into OUT/<run>; choose OUT with --out",
    "model.path": "the runs train from scratch and the finetuning row starts from the sweep's own MLE run",
    "objective.name": "each run has its own objective; choose them with --objectives and --finetune",
    "data.packed_path": "each objective packs its own blocks (conditional training adds tokens, filtering drops "
                        "documents)",
    "eval.kl_reference": "the sweep's MLE run of each seed is the KL reference of that seed's runs",
}


def user_settings(overrides) -> dict:
    """{dotted key: value} that the user's overrides set."""
    keys: dict = {}
    for o in overrides:
        keys.update(flat_keys(parse_override(o)))
    return keys


def refuse_recipe_settings(overrides) -> None:
    """ConfigError for each override that the sweep would have to replace (`RECIPE_SETTINGS`)."""
    problems = [f"{key}: a sweep sets it for every run ({why}); remove {key}=..."
                for key in user_settings(overrides) for k, why in RECIPE_SETTINGS.items()
                if key == k or key.startswith(k + ".")]
    if problems:
        raise ConfigError(problems)


def scored_corpus(out_dir: Path, overrides) -> tuple[str | list, bool]:
    """The sweep's scored corpus and whether the user gave it: a user's data.scored_path is
    used as it is (never rescored); else the sweep scores data.source into OUT/scored.jsonl."""
    given = user_settings(overrides).get("data.scored_path")
    return (given, True) if given else (str(out_dir / "scored.jsonl"), False)


def run_config(task: str, out_dir: Path, run: SweepRun, overrides: list[str] = (), model: str = "tiny",
               scale: str | None = "demo", run_dir: Path | None = None, start_dir: Path | None = None,
               extra_configs: tuple[str, ...] = ()) -> Config:
    """The config of one run: task, objective, model, scale and `extra_configs` files, the
    sweep's and the run's overrides, then its folder (default `out_dir/<name>`), budget
    share and start (`start_dir`, default `out_dir/<start_from>`). A user's
    data.scored_path and tokenizer.path are kept (`scored_corpus`)."""
    scheduled = bool(run.start_at)  # MLE first, then the objective: its file's settings go into the phase
    files = [task_config(task, scale), objective_config("mle" if scheduled else run.objective, task),
             f"models/{model}"]
    overrides = [*overrides, *run.overrides] + ([start_at_override(run.objective, task, run.start_at)]
                                                if scheduled else [])
    files += ([scale] if scale else []) + list(extra_configs)
    base = load_config(files, overrides)
    scored, given = scored_corpus(out_dir, overrides)
    extra = [] if given else [f"data.scored_path={scored}"]
    extra += [f"training.output_dir={run_dir or out_dir / run.name}",
             f"training.num_tokens={max(1, int(base.training.num_tokens * run.budget_fraction))}"]
    if run.start_from:
        extra.append(f"model.path={start_dir or out_dir / run.start_from}")
    elif "tokenizer.path" not in user_settings(overrides):
        extra.append(f"tokenizer.path={out_dir / 'tokenizer'}")
    return load_config(files, [*overrides, *extra])


def run_sweep(task: str = "pep8", out_dir: str | Path = "runs/demo", objectives=DEMO_OBJECTIVES,
              finetune: str | None = None, overrides: list[str] = (), model: str = "tiny",
              scale: str | None = "demo", title: str | None = None, seeds: list[int] | None = None,
              extra_configs: tuple[str, ...] = (), start_at: list[float] | None = None) -> str:
    """Run (or continue) a sweep in `out_dir` and write its report; returns the report.

    `seeds`: train and evaluate every run once per seed (see the module docstring);
    None: once, at the configured training.seed and eval.seed, in `out_dir/<run>`.
    `extra_configs`: config files applied after the scale (`phf sweep`: SWEEP_CONFIGS).
    `start_at`: one run per objective and start point (see the module docstring).
    """
    out_dir = Path(out_dir)
    refuse_recipe_settings(overrides)  # before anything is written
    runs = plan(tuple(objectives), finetune, start_at=start_at)
    for run in runs[1:]:  # every run's config is checked before anything is written (a too short phase)
        run_config(task, out_dir, run, overrides, model, scale, extra_configs=extra_configs)
    out_dir.mkdir(parents=True, exist_ok=True)
    timer = _Timer(out_dir / "timings.json")
    t_start = time.time()
    base = run_config(task, out_dir, runs[0], overrides, model, scale, extra_configs=extra_configs)
    attributes = list(base.task.attributes)
    if len(attributes) > 1 and "conditional" in objectives and not start_at:
        # next to conditional training on every attribute: one run per single attribute
        runs += [SweepRun(f"conditional-{a}", "conditional", overrides=(f"objective.attributes=[{a}]",))
                 for a in attributes]
    seeded = seeds is not None
    seeds = list(seeds) if seeded else [base.training.seed]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {seeds}")
    heldout_seed = base.data.heldout_seed if base.data.heldout_seed is not None else base.training.seed
    one_seed = len(seeds) == 1

    scored, given = scored_corpus(out_dir, overrides)
    if given:  # the user's scored corpus, as it is
        read_scored(scored)  # a missing file is named now (the records are read later)
        log.info("training on the scored corpus %s as it is (data.scored_path; no scoring stage)", scored)
    elif not summary_path(scored).exists():  # written last: without it the corpus is not completely scored
        summary = timer.run("score", lambda: score_dataset(base.data, base.task))  # continues a partial one
        log.info("scored %d documents (%d failed) into %s", summary["documents"], summary["failed_documents"], scored)
    write_json(out_dir / "sweep.json", {"scored_corpus": scored, "scored_by_the_sweep": not given,
                                        "source": None if given else base.data.model_dump(mode="json"),
                                        "tokenizer": base.tokenizer.path})

    tok_dir = Path(base.tokenizer.path)  # the user's tokenizer.path, else one the sweep trains
    if "tokenizer.path" not in user_settings(overrides) and not (tok_dir / "tokenizer.json").exists():
        timer.run("tokenizer", lambda: save_tokenizer(train_tokenizer(
            (r.document for r in read_scored(scored, attributes=list(base.task.attributes))),
            base.tokenizer.vocab_size, base.tokenizer.train_max_bytes), tok_dir))

    report_dirs = []
    for seed in seeds:  # seed by seed: an interrupted sweep has whole seeds to compare
        dirs = {run.name: seed_dir(out_dir, run.name, seed, one_seed) for run in runs}
        seed_overrides = [f"training.seed={seed}", f"eval.seed={seed}", f"data.heldout_seed={heldout_seed}"] \
            if seeded else []
        reference = dirs.get("mle")
        if reference is None:
            log.info("no MLE run in the sweep: no KL reference, capability is the held-out loss only")
        for run in runs:
            run_dir = dirs[run.name]
            extra = [*seed_overrides] + ([f"eval.kl_reference={reference}"] if reference else [])
            cfg = run_config(task, out_dir, run, [*overrides, *extra], model, scale, run_dir=run_dir,
                             start_dir=dirs.get(run.start_from), extra_configs=extra_configs)
            stage = run.name if one_seed else f"{run.name}/seed-{seed}"
            report_dirs.append(run_dir)
            files = RunFiles(run_dir)
            if files.results.exists():
                if reference and files.read_results().get("kl") is None:
                    timer.run(f"kl/{stage}", lambda: add_kl(run_dir, cfg.eval, reference))
                else:
                    log.info("%s: already evaluated, skipping", run_dir)
                continue
            if not files.train_summary.exists():
                # a run that was killed continues (from its last checkpoint, if it saved one)
                timer.run(f"train/{stage}", lambda: train(cfg, resume=bool(files.outputs())))
            timer.run(f"eval/{stage}", lambda: evaluate_run(run_dir, cfg.eval, cfg.task))

    title = f"{title or f'phf sweep: {task}'} (scored corpus: {scored})"  # the corpus, named where results are read
    report = timer.run("report", lambda: write_report(report_dirs, out_dir / "report.md", title=title))
    log.info("finished in %.1f s (this invocation); report: %s", time.time() - t_start, out_dir / "report.md")
    print(report)
    print("stage timings (s):", json.dumps(timer.times))
    return report
