"""Re-measure the README's findings with seeds: one `phf sweep` per task, grown one seed
at a time, so that an interrupted measurement keeps whole seeds and a rerun continues.

    python bench/findings.py                      # every task, 3 seeds
    python bench/findings.py --tasks pep8 --seeds 42,43,44
    python bench/findings.py --tasks pep8 --objectives mle,filtering,conditional --finetune none
    python bench/findings.py --variant threshold-0.2   # a toxicity investigation variant (VARIANTS)
    python bench/findings.py --tasks pep8 --model llama-tiny --objectives mle,filtering,conditional --finetune none
    python bench/findings.py --replot             # redraw the published Pareto figures from runs.json

After each (task, number of seeds) the sweep's report and a summary of every run
(results, the command, the commit, the CPU and the wall time) are copied to
`docs/findings/<task>/<plan>/` (`all`, or the objectives of a subset joined by `+`;
`<task>-<model>` for a `--model` other than the task's default),
which is meant to be committed as runs finish. The runs
themselves stay under `runs/findings/<task>` (not in git).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from provenance import ROOT, commit, cores, cpu_name, results_files  # bench/ is the script's folder

#: task -> (objectives, finetune row): the issue's re-measurement plan
PLAN = {
    "pep8": ("mle,filtering,conditional,unlikelihood,rwr,awr", "conditional"),
    "toxicity": ("mle,filtering,conditional,unlikelihood", "none"),
    "pii": ("mle,filtering,conditional,unlikelihood", "none"),
}


#: the toxicity investigation's variants of the main plan (`--variant NAME`): each is a
#: sweep of MLE and conditional training in runs/findings/toxicity-NAME, published to
#: docs/findings/toxicity/NAME. "share": link the main toxicity sweep's scored corpus,
#: tokenizer and MLE runs (the change touches conditional training only) instead of
#: repeating them; "corpus": a corpus that bench/toxicity_investigation.py builds.
VARIANTS = {
    # the conditional token on every sentence with P(toxic) > 0.2: 9.5% of sentences
    # (51% of the corpus's summed score) instead of 2.9% (26%)
    "threshold-0.2": {"overrides": ["task.thresholds.conditional=0.2"], "share": True},
    # every fortune with a toxic sentence plus a third of the others: 7.0% toxic sentences
    # instead of 2.9%, seen ~2.3 times in the same token budget
    "enriched": {"overrides": ["data.path=runs/corpora/fortunes-enriched.jsonl"], "corpus": "enriched"},
}
VARIANT_OBJECTIVES = "mle,conditional"


def prepare_variant(name: str, out_root: Path) -> str:
    """Make the variant's folder ready to run; returns it (relative to out_root)."""
    spec, folder = VARIANTS[name], f"toxicity-{name}"
    out, main = out_root / folder, out_root / "toxicity"
    out.mkdir(parents=True, exist_ok=True)
    if spec.get("share"):
        if not (main / "scored.jsonl.summary.json").exists():
            raise SystemExit(f"variant {name} shares {main}'s corpus and MLE runs: run the toxicity plan first")
        for item in ["tokenizer", "mle", *(p.name for p in main.glob("scored.jsonl*"))]:
            if not (out / item).exists():
                (out / item).symlink_to((main / item).resolve())
    if spec.get("corpus") == "enriched" and not (ROOT / "runs/corpora/fortunes-enriched.jsonl").exists():
        from toxicity_investigation import enrich

        print("findings: built the enriched corpus:", enrich(), flush=True)
    return folder


#: the prose tasks' offline corpora (as `make demo TASK=...` prepares them)
CORPORA = {"toxicity": "fortunes", "pii": "debian-docs"}


def prepare_corpus(task: str) -> None:
    if task in CORPORA and not (ROOT / "runs" / "corpora" / f"{CORPORA[task]}.jsonl").exists():
        subprocess.run([sys.executable, "-m", "phf.data.prose_corpora", CORPORA[task],
                        f"runs/corpora/{CORPORA[task]}.jsonl", "--fetch"], cwd=ROOT, check=True)


def run(task: str, seeds: list[int], out_root: Path, extra: list[str], objectives: str | None = None,
        finetune: str | None = None, folder: str | None = None) -> dict:
    objectives, finetune = objectives or PLAN[task][0], finetune or PLAN[task][1]
    out = out_root / (folder or task)
    command = [sys.executable, "-m", "phf", "sweep", "--task", task, "--objectives", objectives,
               "--finetune", finetune, "--seeds", ",".join(map(str, seeds)) + ("," if len(seeds) == 1 else ""),
               "--out", str(out), *extra]
    t0 = time.time()
    subprocess.run(command, cwd=ROOT, check=True)
    return {"command": " ".join(["phf", *command[3:]]), "seeds": seeds, "wall_seconds_this_invocation":
            round(time.time() - t0, 1), "commit": commit(), "cpu": cpu_name(), "cores": cores(),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}


def share(main: Path, out: Path, extra: tuple[str, ...] = ()) -> Path:
    """Sweep folder `out` sharing `main`'s scored corpus and tokenizer (and the runs named
    in `extra` that it has, e.g. its MLE run) through links, so only what differs is trained."""
    if not (main / "scored.jsonl.summary.json").exists() or not (main / "tokenizer" / "tokenizer.json").exists():
        raise SystemExit(f"{main} has no scored corpus and tokenizer yet: run "
                         f"`python bench/findings.py --tasks {main.name} --objectives mle,conditional --finetune none` first")
    out.mkdir(parents=True, exist_ok=True)
    for item in ["tokenizer", *(e for e in extra if (main / e).exists()), *(p.name for p in main.glob("scored.jsonl*") if not p.name.endswith(".lock"))]:
        if not (out / item).exists():
            (out / item).symlink_to((main / item).resolve())
    return out


def publish(task: str, out_root: Path, meta: dict, plan: str, folder: str | None = None) -> None:
    """Copy the report and every run's results next to the command that made them."""
    src, dest = out_root / (folder or task), ROOT / "docs" / "findings" / task / plan
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "report.md", dest / "report.md")
    if (src / "report_figures").is_dir():
        shutil.copytree(src / "report_figures", dest / "report_figures", dirs_exist_ok=True)
    runs = {}
    for results in sorted(results_files(src)):
        row = json.loads(results.read_text())
        row.pop("scenarios", None), row.pop("kl_details", None)
        runs[str(results.parent.relative_to(src))] = row
    timings = json.loads((src / "timings.json").read_text()) if (src / "timings.json").exists() else {}
    history = json.loads((dest / "runs.json").read_text()).get("invocations", []) if (dest / "runs.json").exists() \
        else []
    (dest / "runs.json").write_text(json.dumps({"invocations": [*history, meta], "stage_seconds": timings,
                                                "runs": runs}, indent=1))


def replot(folder: Path) -> list[str]:
    """Redraw a published finding's Pareto figures from its runs.json with today's plots,
    and update their captions in its report.md; returns the figures redrawn.

    Every number of the figures is in runs.json (each run's results.json without its
    scenarios). The training curves (curves.png) need the runs' metrics.jsonl, which
    are not published: they stay as they are.
    """
    import tempfile

    from phf.report import write_report
    from phf.sweep import ALL_OBJECTIVES, plan

    if not list((folder / "report_figures").glob("pareto_*.png")):
        return []  # a finding without Pareto figures (another kind of report): nothing to redraw
    runs = json.loads((folder / "runs.json").read_text())["runs"]
    order = [r.name for r in plan(ALL_OBJECTIVES, "conditional")]
    names = list(dict.fromkeys(row["run"] for row in runs.values()))
    rank = {n: order.index(n) if n in order else len(order) + names.index(n) for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for rel, row in runs.items():
            (tmp / "runs" / rel).mkdir(parents=True, exist_ok=True)
            (tmp / "runs" / rel / "results.json").write_text(json.dumps(row))
        dirs = sorted(runs, key=lambda rel: (runs[rel]["seed"], rank[runs[rel]["run"]]))  # the sweep's order
        new = write_report([tmp / "runs" / d for d in dirs], tmp / "report.md").splitlines()
        redrawn = sorted(p.name for p in (tmp / "report_figures").glob("pareto_*.png"))
        for name in redrawn:
            shutil.copy(tmp / "report_figures" / name, folder / "report_figures" / name)
    lines = (folder / "report.md").read_text().splitlines()
    for i, line in enumerate(lines):  # an image line, a blank line, then its *caption*
        if any(line.endswith(f"(report_figures/{name})") for name in redrawn) and line in new:
            j = new.index(line)
            if i + 2 < len(lines) and lines[i + 2].startswith("*") and new[j + 2].startswith("*"):
                lines[i + 2] = new[j + 2]
    (folder / "report.md").write_text("\n".join(lines) + "\n")
    return redrawn


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="pep8,toxicity,pii")
    p.add_argument("--seeds", default="42,43,44")
    p.add_argument("--out", default="runs/findings")
    p.add_argument("--objectives", help="a subset of the task's plan (the same folder: finished runs are reused)")
    p.add_argument("--finetune", help="the finetuning row's objective, or none (default: the plan's)")
    p.add_argument("--model", help="a model preset (configs/models) instead of the task's default: the runs go "
                   "to runs/findings/<task>-<model> and publish to docs/findings/<task>-<model>/")
    p.add_argument("--variant", choices=sorted(VARIANTS), help="a toxicity investigation variant (see VARIANTS)")
    p.add_argument("--replot", action="store_true", help="only redraw the Pareto figures of every published "
                   "finding (docs/findings/*/*/) from its runs.json, and their captions")
    p.add_argument("extra", nargs="*", help="overrides passed to every sweep")
    args = p.parse_args(argv)
    if args.replot:
        for runs_json in sorted((ROOT / "docs" / "findings").glob("*/*/runs.json")):
            redrawn = replot(runs_json.parent)
            print(f"findings: {runs_json.parent.relative_to(ROOT)}: redrew {', '.join(redrawn) or 'nothing'}")
        return 0
    seeds = [int(s) for s in args.seeds.split(",") if s]
    out_root = ROOT / args.out
    if args.variant:
        prepare_corpus("toxicity")
        folder = prepare_variant(args.variant, out_root)
        for k in range(1, len(seeds) + 1):
            meta = run("toxicity", seeds[:k], out_root, [*args.extra, *VARIANTS[args.variant]["overrides"]],
                       VARIANT_OBJECTIVES, "none", folder=folder)
            publish("toxicity", out_root, meta, args.variant, folder=folder)
            print(f"findings: toxicity variant {args.variant} with seeds {seeds[:k]} published", flush=True)
        return 0
    for k in range(1, len(seeds) + 1):  # seed by seed over the tasks: whole seeds first
        for task in args.tasks.split(","):
            prepare_corpus(task)
            folder = f"{task}-{args.model}" if args.model else task
            extra = ["--model", args.model, *args.extra] if args.model else args.extra
            meta = run(task, seeds[:k], out_root, extra, args.objectives, args.finetune, folder=folder)
            plan = args.objectives.replace(",", "+") if args.objectives else "all"
            publish(folder, out_root, meta, plan, folder=folder)
            print(f"findings: {folder} with seeds {seeds[:k]} published to docs/findings/{folder}/{plan}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
