"""The demo recipe: the whole pipeline at demo scale, on data every machine has.

score the corpus -> train one tokenizer -> train MLE, filtering and conditional
runs under the same token budget -> evaluate each -> report. Every stage writes
its output in `out_dir` and is skipped when that output exists, so an interrupted
demo continues where it stopped. Stage timings go to `timings.json`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from phf.config import Config, load_config

log = logging.getLogger(__name__)

DEMO_OBJECTIVES = ("mle", "filtering", "conditional")


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


def demo_config(task: str, out_dir: Path, objective: str, overrides: list[str] = ()) -> Config:
    return load_config(
        [f"tasks/{task}", f"objectives/{objective}", "models/tiny", "demo"],
        [f"data.scored_path={out_dir / 'scored.jsonl'}",
         f"tokenizer.path={out_dir / 'tokenizer'}",
         f"training.output_dir={out_dir / objective}",
         *overrides])


def run_demo(task: str = "pep8", out_dir: str | Path = "runs/demo", overrides: list[str] = (),
             objectives: tuple[str, ...] = DEMO_OBJECTIVES) -> str:
    from phf.data.scoring import score_corpus
    from phf.data.sources import iter_documents
    from phf.evaluation.evaluate import evaluate_run
    from phf.report import write_report
    from phf.tokenizer import save_tokenizer, train_tokenizer
    from phf.data.records import read_scored
    from phf.train import train

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timer = _Timer(out_dir / "timings.json")
    t_start = time.time()
    base = demo_config(task, out_dir, "mle", overrides)

    scored = Path(base.data.scored_path)
    if not scored.exists():
        tmp = scored.with_suffix(".partial.jsonl")
        summary = timer.run("score", lambda: score_corpus(
            iter_documents(base.data), str(tmp), base.task.scorer, base.task.scorer_args,
            num_workers=base.data.num_workers, threshold=float(base.task.thresholds.get("conditional", 0.0))))
        tmp.rename(scored)  # only a finished corpus counts as scored
        (out_dir / "scoring_summary.json").write_text(json.dumps(summary.to_dict(), indent=2))
        log.info("scored: %s", summary.to_dict())

    tok_dir = Path(base.tokenizer.path)
    if not (tok_dir / "tokenizer.json").exists():
        timer.run("tokenizer", lambda: save_tokenizer(train_tokenizer(
            ("".join(r["texts"]) for r in read_scored(scored)),
            base.tokenizer.vocab_size, base.tokenizer.train_max_bytes), tok_dir))

    run_dirs = []
    for objective in objectives:
        cfg = demo_config(task, out_dir, objective, overrides)
        run_dir = Path(cfg.training.output_dir)
        run_dirs.append(run_dir)
        if (run_dir / "results.json").exists():
            log.info("%s: already evaluated, skipping", run_dir)
            continue
        if not (run_dir / "train_summary.json").exists():
            timer.run(f"train/{objective}", lambda: train(cfg))
        timer.run(f"eval/{objective}", lambda: evaluate_run(run_dir, cfg))

    report = timer.run("report", lambda: write_report(run_dirs, out_dir / "report.md",
                                                      title=f"phf demo: {task}"))
    wall = round(time.time() - t_start, 1)
    log.info("demo finished in %.1f s (this invocation); report: %s", wall, out_dir / "report.md")
    print(report)
    print("stage timings (s):", json.dumps(timer.times))
    return report
