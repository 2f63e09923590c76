"""The `phf` command line: a thin layer over the library.

Configs and overrides are given together, in order: YAML files (a path, or a name
under phf's configs such as `tasks/pep8`) and dotted overrides (`key.sub=value`).

    phf score  tasks/pep8 data.max_bytes=5000000
    phf score  tasks/pep8 data.source=dir data.path=corpus/ --engine ray -o runs/scored/
    phf pack   tasks/pep8 objectives/conditional tokenizer.path=tok data.scored_path=runs/scored -o runs/packed
    phf train  tasks/pep8 objectives/conditional models/tiny training.output_dir=runs/cond
    phf eval   runs/cond
    phf eval   runs/cond --kl-reference runs/mle
    phf redteam runs/cond --red-lm runs/mle --rounds 3
    phf report runs/mle runs/cond -o runs/report.md
    phf card   runs/cond                 rewrite its model card, runs/cond/README.md
    phf export runs/cond shared/cond     weights, tokenizer and card, ready to share
    phf demo
    phf sweep --task pep8
    phf sweep --task pep8 --seeds 3
    phf config tasks/pep8 models/tiny    every config key, its value and meaning
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import sys
from pathlib import Path

from phf.config import Config, ConfigError, check_paths, load_config
from phf.errors import SaveFailed
from phf.records import scored_files
from phf.run_lock import hold
from phf.runfiles import RunFiles, write_json

SETTINGS_HELP = (
    "YAML config files (a path, or a name under phf's configs like tasks/pep8, objectives/conditional, "
    "models/tiny) and dotted overrides like training.learning_rate=5e-4, merged left to right")


def split_settings(settings: list[str]) -> tuple[list[str], list[str]]:
    files = [s for s in settings if "=" not in s]
    overrides = [s for s in settings if "=" in s]
    return files, overrides


def config_from(settings: list[str], base: list[str] = ()) -> Config:
    files, overrides = split_settings(settings)
    return load_config([*base, *files], overrides)


def cmd_score(args) -> int:
    from phf.data.scoring import score_dataset

    cfg = config_from(args.settings)
    if args.engine == "ray":
        return _score_on_ray(args, cfg, args.out or cfg.data.scored_path)
    check_paths(cfg, training=False)
    report = score_dataset(cfg.data, cfg.task, args.out, num_workers=args.workers,
                           time_limit=args.time_limit or None, restart=args.restart, on_bad=args.on_bad_record,
                           filtering_threshold=cfg.threshold if cfg.objective.name == "filtering" else None)
    print(json.dumps(report, indent=2))
    return _empty_output(report)


def _empty_output(report: dict) -> int:
    """Exit status 2, with the reason, when scoring wrote no document."""
    if report.get("documents", 1):
        return 0
    print(f"phf score: error: no document was scored ({report.get('documents_in', 0)} read, "
          f"{report.get('failed_documents', 0)} failed, skipped: {report.get('source_skipped') or 'none'}); "
          "check data.path / data.source and the failures file", file=sys.stderr)
    return 2


def _score_on_ray(args, cfg: Config, out) -> int:
    from phf.data.scoring import scoring_source, summary_counting, summary_path
    from phf.engines.ray_scoring import score_corpus_ray

    filtering = cfg.threshold if cfg.objective.name == "filtering" else None
    result = score_corpus_ray(cfg.data, out, cfg.task.scorer, cfg.task.scorer_args,
                              **summary_counting(cfg.task, filtering), time_limit=args.time_limit or None,
                              source=scoring_source(cfg.data), resume=not args.restart,
                              on_bad=args.on_bad_record, address=args.address,
                              num_cpus=args.workers or cfg.data.num_workers,
                              shard_bytes=int(args.shard_mb * (1 << 20)), actors=args.actors,
                              gpus_per_actor=args.gpus_per_actor)
    report = {"output": str(out), "engine": "ray", "shards": result.shards, "resumed_shards": result.resumed_shards,
              **result.summary.to_dict(), "failures_file": str(result.failures_path),
              "source_records_in": result.source.records_in, "source_read": result.source.read,
              "source_skipped": result.source.skipped}
    write_json(summary_path(out), report)
    print(json.dumps(report, indent=2))
    return 0


def cmd_pack(args) -> int:
    from phf.data.transforms import add_objective_tokens, resolve_threshold
    from phf.engines.ray_packing import pack_shards_ray
    from phf.tokenizer import load_tokenizer
    from phf.train import pack_spec

    cfg = config_from(args.settings)
    out = args.out or cfg.data.packed_path
    if not out:
        raise ConfigError("phf pack: give the output folder (-o DIR or data.packed_path=DIR)")
    if cfg.objective.name == "schedule":
        raise ConfigError("objective.name: phf pack packs one objective's blocks, and a schedule trains each phase "
                          "on its own; train the schedule from data.scored_path (phf train packs every phase)")
    tokenizer_path = cfg.model.path or cfg.tokenizer.path
    if not tokenizer_path:
        raise ConfigError("phf pack needs a trained tokenizer: set tokenizer.path (or model.path)")
    shards = scored_files(args.input or cfg.data.scored_path)
    tokenizer = load_tokenizer(tokenizer_path, cfg.model.trust_remote_code)
    add_objective_tokens(tokenizer, cfg.objective, list(cfg.conditional_attributes()) or None)
    threshold = resolve_threshold(cfg.objective, cfg.task, [str(s) for s in shards])  # over every shard
    with hold(out, "phf pack", at=f"{out}.lock"):  # beside the folder: its emptiness says it is new
        totals = pack_shards_ray(shards, tokenizer, pack_spec(cfg, tokenizer, threshold), out,
                                 address=args.address, num_cpus=args.workers, resume=not args.restart)
    print(json.dumps({"output": str(out), "threshold": threshold, **totals}, indent=2))
    print(f"train on it with: phf train ... data.packed_path={out}")
    return 0


def cmd_config(args) -> int:
    from phf.config import describe

    print(describe(config_from(args.settings)), end="")
    return 0


def cmd_train(args) -> int:
    from phf.train import is_main_process, train

    cfg = config_from(args.settings)
    if not is_main_process():  # another process of a distributed launch: rank 0 holds the lock, reports, evaluates
        train(cfg, resume=args.resume, overwrite=args.overwrite, on_bad=args.on_bad_record)
        return 0
    with hold(cfg.training.output_dir, "phf train"):  # also held by --eval's evaluation
        run_dir = train(cfg, resume=args.resume, overwrite=args.overwrite, on_bad=args.on_bad_record)
        print(f"trained: {run_dir}")
        if args.eval:
            from phf.evaluation.evaluate import evaluate_run

            print(json.dumps(evaluate_run(run_dir, cfg.eval, cfg.task), indent=2))
    return 0


def run_config(run_dir: Path, settings: list[str]) -> Config:
    """A run's saved config.yaml with overrides on top."""
    files = RunFiles(run_dir)
    if not files.config.exists():
        raise ConfigError(f"{run_dir}: no config.yaml; is this a phf run directory?")
    files.read_config()  # a damaged or cut-short one is named, not half-used
    return config_from(settings, base=[str(files.config)])


def cmd_eval(args) -> int:
    from phf.evaluation.evaluate import evaluate_run
    from phf.run_guard import check_trained

    run_dir = Path(args.run_dir)
    cfg = run_config(run_dir, args.settings)
    check_trained(run_dir)
    tasks = [t for t in args.lm_eval_tasks.split(",") if t] if args.lm_eval_tasks else None
    if args.lm_eval_limit is not None:
        cfg.eval.lm_eval_limit = args.lm_eval_limit
    with hold(run_dir, "phf eval"):
        results = evaluate_run(run_dir, cfg.eval, cfg.task, kl_reference=args.kl_reference, lm_eval_tasks=tasks)
    print(json.dumps(results, indent=2))
    return 0


def cmd_redteam(args) -> int:
    from phf.evaluation.evaluate import red_team_run
    from phf.run_guard import check_trained

    run_dir = Path(args.run_dir)
    cfg = run_config(run_dir, args.settings)
    check_trained(run_dir)
    with hold(run_dir, "phf redteam"):
        out = red_team_run(run_dir, cfg.eval, cfg.task, red_lm=args.red_lm, prompts_file=args.prompts,
                           rounds=args.rounds, pool_size=args.pool_size, new_prompts_per_round=args.new_prompts)
    for r in out["rounds"]:
        print(f"round {r['round']}: expected max {r['expected_max']:.5g}, pool mean {r['mean']:.5g}, "
              f"pool size {r['pool_size']}")
    print(f"written: {run_dir / 'redteam.json'}")
    return 0


def cmd_report(args) -> int:
    from phf.report import markdown_table, load_results, write_report

    with hold(Path(args.out).with_suffix(".md"), "phf report"):  # the runs are only read: no lock on them
        write_report(args.run_dirs, args.out, title=args.title)
    print(markdown_table(load_results(args.run_dirs), args.run_dirs))
    out = Path(args.out)
    md = out.with_suffix(".md")
    print(f"written: {md}, {md.with_suffix('.html')} and the figures in {md.parent / (md.stem + '_figures')}")
    return 0


def cmd_card(args) -> int:
    from phf.card import write_card

    with hold(args.run_dir, "phf card"):
        print(f"written: {write_card(args.run_dir)}")
    return 0


def cmd_export(args) -> int:
    from phf.export import export_run

    with hold(args.run_dir, "phf export"):  # not while the run is being trained or evaluated
        exported = export_run(args.run_dir, args.out_dir, overwrite=args.overwrite)
    print(f"exported {len(exported)} files to {args.out_dir}: {', '.join(p.name for p in exported)}")
    return 0


def _sweep_seeds(args, task: str, model: str = "tiny", scale: str | None = "demo",
                 extra_configs: tuple[str, ...] = ()) -> list[int] | None:
    """--seeds as a list (a count starts at the configured training.seed), or None."""
    if args.seeds is None:
        return None
    from phf.sweep import SweepRun, parse_seeds, run_config

    first = run_config(task, Path(args.out or "."), SweepRun("mle", "mle"), args.settings, model, scale,
                       extra_configs=extra_configs)
    return parse_seeds(args.seeds, first.training.seed)


def cmd_demo(args) -> int:
    from phf.sweep import DEMO_OBJECTIVES, run_sweep

    seeds = _sweep_seeds(args, args.task)
    with hold(args.out, "phf demo"):
        run_sweep(task=args.task, out_dir=args.out, objectives=DEMO_OBJECTIVES, overrides=args.settings,
                  title=f"phf demo: {args.task}", seeds=seeds)
    return 0


def cmd_sweep(args) -> int:
    from phf.sweep import ALL_OBJECTIVES, SWEEP_CONFIGS, check_objective_names, parse_start_at, run_sweep

    start_at = parse_start_at(args.start_at) if args.start_at else None  # before any data is read
    default = ("conditional",) if start_at else ALL_OBJECTIVES
    objectives = tuple(o.strip() for o in args.objectives.split(",")) if args.objectives else default
    check_objective_names(objectives, None if args.finetune == "none" else args.finetune)
    scale = None if args.scale == "none" else args.scale
    out = args.out or f"runs/sweep-{args.task}"
    seeds = _sweep_seeds(args, args.task, args.model, scale, SWEEP_CONFIGS)
    decodings = None
    if args.decoding:  # checked before anything is trained or loaded
        from phf.decode_sweep import parse_decodings, run_decode_sweep

        decodings = parse_decodings(args.decoding)
    with hold(out, "phf sweep"):
        run_sweep(task=args.task, out_dir=out, objectives=objectives,
                  finetune=None if args.finetune == "none" else args.finetune, overrides=args.settings,
                  model=args.model, scale=scale, seeds=seeds, extra_configs=SWEEP_CONFIGS, start_at=start_at)
        if decodings:
            print(run_decode_sweep(out, decodings, [x for x in args.settings if x.startswith("eval.")]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="phf", description="Pretrain language models with human feedback: score a corpus, train with "
        "MLE, filtering or conditional training (and more), evaluate alignment and capability, compare runs.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("score", help="segment and score a corpus into scored records (JSONL or parquet)",
                       description="Read the configured corpus (data.*), split each document into segments, "
                       "score each segment with the task's scorer and write scored records.")
    s.add_argument("settings", nargs="*", help=SETTINGS_HELP)
    s.add_argument("-o", "--out", help="output file (.jsonl or .parquet); default data.scored_path")
    s.add_argument("-j", "--workers", type=_at_least(1, int), help="scoring processes (default: all cores)")
    s.add_argument("--on-bad-record", choices=["error", "skip"], default="error",
                   help="what to do with a record that cannot be read (default: error)")
    s.add_argument("--time-limit", type=_at_least(0, float), default=120.0, metavar="SECONDS",
                   help="per-document scoring time limit; a document over it is a counted failure "
                   "(default: 120; 0: none)")
    s.add_argument("--restart", action="store_true",
                   help="start over instead of continuing an existing output file")
    s.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: a process pool on this machine (default); ray: shards on a Ray cluster, "
                   "written as a folder of parquet shards (needs phf[ray])")
    s.add_argument("--address", help="ray: the cluster to use (auto, or HOST:PORT of the head); default: start "
                   "a local Ray instance for this run")
    s.add_argument("--shard-mb", type=float, default=16, help="ray: size of a shard of files, in MB (default 16)")
    s.add_argument("--actors", type=int, help="ray, model scorers: actors that each load the model "
                   "(default: one per GPU, or one on a CPU-only cluster)")
    s.add_argument("--gpus-per-actor", type=float, help="ray, model scorers: GPUs per actor, e.g. 0.25 for four "
                   "actors per GPU (default: 1 when the cluster has GPUs, else 0)")
    s.set_defaults(fn=cmd_score)

    pk = sub.add_parser("pack", help="tokenize and pack scored shards in parallel on Ray, for data.packed_path",
                        description="Pack each scored shard (data.scored_path: a folder, a glob or a file) into "
                        "its own folder of blocks with the run's tokenizer, objective and block size, on Ray. "
                        "`phf train ... data.packed_path=OUT` then trains on them without packing.")
    pk.add_argument("settings", nargs="*", help=SETTINGS_HELP)
    pk.add_argument("-i", "--input", help="scored shards (default: data.scored_path)")
    pk.add_argument("-o", "--out", help="output folder (default: data.packed_path)")
    pk.add_argument("--address", help="the Ray cluster (auto, or HOST:PORT); default: a local Ray instance")
    pk.add_argument("-j", "--workers", type=int, help="CPUs of the local Ray instance (default: all cores)")
    pk.add_argument("--restart", action="store_true", help="pack every shard again")
    pk.set_defaults(fn=cmd_pack)

    c = sub.add_parser("config", help="print the merged config: every key with its value and meaning",
                       description="Merge the given configs and overrides as `phf train` would, validate them, "
                       "and print the result as YAML with each key's meaning as a comment. With no settings: "
                       "every key and its default.")
    c.add_argument("settings", nargs="*", help=SETTINGS_HELP)
    c.set_defaults(fn=cmd_config)

    t = sub.add_parser("train", help="train a model on a scored corpus with an objective",
                       description="Train a causal LM (from scratch or from model.path) on the scored corpus "
                       "data.scored_path with the configured objective and token budget.")
    t.add_argument("settings", nargs="*", help=SETTINGS_HELP)
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the run dir")
    t.add_argument("--overwrite", action="store_true",
                   help="train again into a run directory that holds a run, deleting its outputs first")
    t.add_argument("--eval", action="store_true", help="evaluate the run when training ends")
    t.add_argument("--on-bad-record", choices=["error", "skip"], default="error",
                   help="a scored record that fails its checks (a missing attribute, a NaN or string score, "
                   "a score list of the wrong length): stop with its file:line (default), or skip it, "
                   "counted by reason in train_summary.json's records")
    t.set_defaults(fn=cmd_train)

    e = sub.add_parser("eval", help="evaluate a trained run (samples, misalignment, held-out loss)",
                       description="Sample from the run's model, score the samples, measure held-out loss, "
                       "and write results.json in the run directory.")
    e.add_argument("run_dir", help="a run directory written by `phf train`")
    e.add_argument("settings", nargs="*", help="overrides of the run's config.yaml, e.g. eval.num_samples=512")
    e.add_argument("--kl-reference", metavar="DIR", help="also measure KL(reference || model) against this "
                   "causal LM (any tokenizer; its samples are cached beside it); default eval.kl_reference")
    e.add_argument("--lm-eval-tasks", metavar="TASKS", help="comma-separated lm-evaluation-harness tasks to run "
                   "(needs `pip install lm-eval`); default eval.lm_eval_tasks")
    e.add_argument("--lm-eval-limit", type=int, metavar="N", help="examples per lm-eval task (quick checks)")
    e.set_defaults(fn=cmd_eval)

    rt = sub.add_parser("redteam", help="red-team a trained run with a red LM (adaptive adversarial prompts)",
                        description="Grow a pool of adversarial prompts over rounds: a red LM, few-shot prompted "
                        "with the prompts that elicited the worst answers so far, writes new ones. Reports the "
                        "expected maximum score per round in redteam.json (and results.json).")
    rt.add_argument("run_dir", help="a run directory written by `phf train`")
    rt.add_argument("settings", nargs="*", help="overrides of the run's config.yaml, e.g. eval.red_team.num_fewshot=6")
    rt.add_argument("--red-lm", metavar="DIR", help="the red LM (a causal LM directory); default eval.red_lm")
    rt.add_argument("--prompts", metavar="FILE", help="seed prompts, JSONL of {\"prompt\": ...}; default "
                    "eval.red_team_prompts, else the first scenario's prompts")
    rt.add_argument("--rounds", type=int, help="rounds of new prompts (default eval.red_team.rounds or 10)")
    rt.add_argument("--pool-size", type=int, help="prompts kept in the pool (default 2000)")
    rt.add_argument("--new-prompts", type=int, help="new prompts per round (default 512)")
    rt.set_defaults(fn=cmd_redteam)

    r = sub.add_parser("report", help="compare evaluated runs: Markdown + HTML report with plots",
                       description="Collect results.json, metrics.jsonl, samples and redteam.json of each run "
                       "directory into one report: the table of runs, Pareto plots, training curves, scenarios "
                       "and their highest-scoring samples. Writes OUT (Markdown), OUT with .html "
                       "(self-contained) and the PNG figures.")
    r.add_argument("run_dirs", nargs="+", help="evaluated run directories")
    r.add_argument("-o", "--out", default="report.md", help="output Markdown file (default: report.md)")
    r.add_argument("--title", default="phf report", help="the report's title")
    r.set_defaults(fn=cmd_report)

    cd = sub.add_parser("card", help="write the run's model card (README.md) from its config and results",
                        description="Rewrite README.md in the run folder, a Hugging Face model card, from its "
                        "config.yaml, train_summary.json and results.json (phf train and phf eval write it too).")
    cd.add_argument("run_dir", help="a run directory written by `phf train`")
    cd.set_defaults(fn=cmd_card)

    x = sub.add_parser("export", help="copy a finished run into a folder ready to share or push_to_hub",
                       description="Copy the safetensors weights, config.json, generation_config.json, the "
                       "tokenizer and a fresh model card of a finished run into OUT_DIR; no optimizer state, "
                       "checkpoints or pickle files.")
    x.add_argument("run_dir", help="a finished run directory (with train_summary.json)")
    x.add_argument("out_dir", help="the export folder (new or empty)")
    x.add_argument("--overwrite", action="store_true", help="replace the contents of a non-empty OUT_DIR")
    x.set_defaults(fn=cmd_export)

    d = sub.add_parser("demo", help="score, train MLE/filtering/conditional, evaluate and report, end to end",
                       description="The whole pipeline at demo scale on built-in data (PEP8 on the Python "
                       "standard library). Finished stages are skipped when rerun.")
    d.add_argument("settings", nargs="*", help="overrides, e.g. training.num_tokens=500000")
    d.add_argument("--task", default="pep8", help="task config name (default: pep8)")
    d.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    d.add_argument("--seeds", metavar="N|LIST", help="train and evaluate every run once per seed: a count N (N seeds from training.seed on) or a "
                   "comma-separated list such as 1,2,3; the report shows means with 95%% intervals over seeds and tests "
                   "each run against MLE (default: one run per objective at training.seed)")
    d.set_defaults(fn=cmd_demo)

    w = sub.add_parser("sweep", help="every objective on one task under one token budget, plus finetuning",
                       description="Train and evaluate each objective on the task under the same token budget, "
                       "plus MLE pretraining followed by finetuning with a feedback objective (same total "
                       "budget), and write the report. With --seeds, every run once per seed. Finished (run, seed) pairs are "
                       "skipped when rerun.")
    w.add_argument("settings", nargs="*", help="overrides, e.g. training.num_tokens=500000")
    w.add_argument("--task", default="pep8", help="task config name (default: pep8)")
    w.add_argument("--objectives", help="comma-separated (default: all six; with --start-at: conditional)")
    w.add_argument("--start-at", metavar="FRACTIONS", help="intervention timing: per objective one run per start "
                   "point, MLE until that fraction of the token budget, then the objective, in one run (one "
                   "optimizer and learning-rate schedule), e.g. 0,0.2,0.6; the report compares them")
    w.add_argument("--finetune", default="conditional",
                   help="objective for the finetuning row, or 'none' (default: conditional)")
    w.add_argument("--model", default="tiny", help="model config name (default: tiny)")
    w.add_argument("--scale", default="demo", help="scale config applied on top, or 'none' (default: demo); "
                   "then scales/sweep (1000 evaluation samples per scenario)")
    w.add_argument("--out", help="output directory (default: runs/sweep-TASK)")
    w.add_argument("--decoding", metavar="MODES", help="then evaluate every run again under each decoding mode, "
                   "without training again: comma-separated plain, retag, guidance[:G[:none]], "
                   "tag-aware[:THRESHOLD[:ratio]], rerank[:N[:model]] (e.g. plain,retag,guidance:2,rerank:4); "
                   "writes OUT/decoding.md")
    w.add_argument("--seeds", metavar="N|LIST", help="train and evaluate every run once per seed: a count N (N seeds from training.seed on) or a "
                   "comma-separated list such as 1,2,3; the report shows means with 95%% intervals over seeds and tests "
                   "each run against MLE (default: one run per objective at training.seed)")
    w.set_defaults(fn=cmd_sweep)
    return p


def _at_least(low: float, kind=int):
    """An argparse type: a number of `kind` >= `low` (else a one-line usage error)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not value >= low:  # also refuses nan
            raise argparse.ArgumentTypeError(f"must be >= {low:g}, got {text}")
        return value
    return parse


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return args.fn(args)
    except (ValueError, FileNotFoundError) as e:  # ConfigError and DataError included
        if args.verbose:
            raise
        print(f"phf {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full (or another failed write): what it hit and what is kept
        if args.verbose or not (isinstance(e, SaveFailed) or e.errno in (errno.ENOSPC, errno.EDQUOT)):
            raise
        hint = "" if isinstance(e, SaveFailed) else (
            "; free disk space and rerun the same command (phf score continues where it stopped; "
            "phf train --resume continues from the last complete checkpoint)")
        print(f"phf {args.command}: error: {e}{hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
