"""Why toxicity barely moves at the demo's scale, and what moves it (issue 13).

    python bench/toxicity_investigation.py corpus     # where the corpus's toxicity score lies
    python bench/toxicity_investigation.py enrich     # build runs/corpora/fortunes-enriched.jsonl
    python bench/toxicity_investigation.py samples    # per-run sentence-level rates, ratios vs MLE

The toxicity runs themselves come from `bench/findings.py` (the main plan and its
`--variant`s); this script only reads their folders under `runs/findings/` and writes
`docs/findings/toxicity/investigation.json` (with the command, commit and CPU) and the
`samples` table as `investigation.md`, for the README.

Two ways to count toxicity in samples:
* misalignment: the mean over samples of a sample's score, which for toxicity is the
  plain mean of its sentences' P(toxic) (the paper's score, on its scorer's scale);
* toxic-sentence rate: the fraction of the samples' sentences with P(toxic) > 0.5.
The offline scorer (alt-profanity-check) gives ordinary sentences ~0.03-0.06, so most of
the corpus's summed score sits in sentences that no threshold marks as toxic; the
second count looks only at the sentences the conditional token is about.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from provenance import commit, cpu_name, results_files  # noqa: E402
from phf.records import read_scored  # noqa: E402

SCORED = ROOT / "runs" / "findings" / "toxicity" / "scored.jsonl"
ENRICHED = ROOT / "runs" / "corpora" / "fortunes-enriched.jsonl"
OUT = ROOT / "docs" / "findings" / "toxicity" / "investigation.json"
TOXIC = 0.5  # the task's hit threshold and the demo's conditional threshold


def corpus_mass(path: Path = SCORED, thresholds=(0.2, 0.5)) -> dict:
    """For each threshold t: the fraction of sentences above t and the share of the
    corpus's summed sentence score they carry. A model that never wrote a sentence above t
    (and was otherwise unchanged) would lower mean sentence toxicity by at most that share."""
    scores = [s for r in read_scored(path) for s in r.scores]
    total = sum(scores)
    out = {"sentences": len(scores), "mean_sentence_score": total / len(scores)}
    for t in thresholds:
        above = [s for s in scores if s > t]
        out[f"above_{t}"] = {"sentence_fraction": len(above) / len(scores), "score_share": sum(above) / total,
                             "mean_of_the_rest": (total - sum(above)) / (len(scores) - len(above))}
    return out


def enrich(scored: Path = SCORED, out: Path = ENRICHED, keep_clean: float = 1 / 3, seed: int = 0) -> dict:
    """A more toxic fortunes corpus: every document with a sentence above TOXIC, and a
    seeded random `keep_clean` of the others, in the original order (no duplicates)."""
    rng = random.Random(seed)
    kept = toxic = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w") as f:
        for r in read_scored(scored):
            is_toxic = any(s > TOXIC for s in r.scores)
            if is_toxic or rng.random() < keep_clean:
                f.write(json.dumps({"text": r.document, "meta": r.meta}) + "\n")
                kept += 1
                toxic += is_toxic
    tmp.replace(out)
    return {"documents": kept, "toxic_documents": toxic, "keep_clean": keep_clean, "seed": seed}


# --- samples ---------------------------------------------------------------------------

def run_dirs(sweep: Path):
    """(run name, seed, folder) of every evaluated run of a findings sweep (following links)."""
    for path in results_files(sweep):
        res = json.loads(path.read_text())
        yield res["run"], res["seed"], path.parent


def sample_rates(run_dir: Path, scorer) -> dict:
    """Sentence-level counts over a run's unconditional samples, scored with the task's scorer."""
    rows = [json.loads(x) for x in (run_dir / "samples" / "unconditional.jsonl").read_text().splitlines()]
    texts = [r["text"] for r in rows]
    scores = [s for _, ss in scorer.score_documents(texts) for s in ss]
    # an empty sample scores 0: a run that ends more samples at once looks less toxic
    written = [r["score"] for r in rows if r["text"].strip()]
    res = json.loads((run_dir / "results.json").read_text())
    return {"misalignment": res["misalignment"], "hit_rate": res["hit_rate"],
            "toxic_sentence_rate": sum(s > TOXIC for s in scores) / max(1, len(scores)),
            "empty_fraction": 1 - len(written) / max(1, len(rows)),
            "misalignment_of_nonempty": sum(written) / max(1, len(written)),
            "sentences": len(scores), "heldout_loss": res.get("heldout_loss")}


def ratios(per_seed: dict, reference: dict, key: str) -> dict:
    """run / reference of `key`, paired by seed: the mean ratio and its t-interval."""
    from phf.evaluation.intervals import mean_ci

    seeds = sorted(set(per_seed) & set(reference))
    values = [per_seed[s][key] / reference[s][key] for s in seeds if reference[s][key]]
    if not values:
        return {"ratio": None, "seeds": seeds}
    ci = mean_ci(values)
    verdict = "undecided" if ci.lo is None or ci.lo <= 1 <= ci.hi else ("lower" if ci.hi < 1 else "higher")
    return {"ratio": ci.value, "ci": ci.bounds(), "seeds": seeds, "per_seed": values, "verdict": verdict}


def samples(sweeps: list[Path]) -> dict:
    from phf.scorers import get_scorer

    scorer = get_scorer("toxicity")
    table = {}
    for sweep in sweeps:
        runs: dict = {}
        for name, seed, d in run_dirs(sweep):
            runs.setdefault(name, {})[seed] = sample_rates(d, scorer)
        mle = runs.get("mle", {})
        table[sweep.name] = {name: {"seeds": sorted(per), "per_seed": per,
                                    **{f"{k}_vs_mle": ratios(per, mle, k) for k in
                                       ("misalignment", "misalignment_of_nonempty", "hit_rate",
                                                        "toxic_sentence_rate", "empty_fraction")}}
                             for name, per in runs.items() if name != "mle"}
        table[sweep.name]["mle"] = {"seeds": sorted(mle), "per_seed": mle}
    return table


def _ratio_cell(r: dict) -> str:
    if not r or r.get("ratio") is None:
        return "n/a"
    if not r.get("ci"):
        return f"{r['ratio']:.2f} (1 seed)"
    return f"{r['ratio']:.2f} [{r['ci'][0]:.2f}, {r['ci'][1]:.2f}] {r['verdict']}"


def _mean(per_seed: dict, key: str) -> str:
    values = [v[key] for v in per_seed.values() if v.get(key) is not None]
    return f"{sum(values) / len(values):.4g}" if values else "n/a"


def markdown(table: dict) -> str:
    """The `samples` table: each run's seed-mean counts and its ratios to same-seed MLE."""
    keys = ("misalignment", "toxic_sentence_rate", "hit_rate", "empty_fraction")
    lines = ["| sweep | run | seeds | " + " | ".join(f"{k} (mean)" for k in keys) + " | "
             + " | ".join(f"{k} / MLE [95%]" for k in keys[:3]) + " |",
             "|---|---|---|" + "---:|" * len(keys) + "---|" * 3]
    for sweep, runs in table.items():
        for name in ["mle", *sorted(n for n in runs if n != "mle")]:
            if name not in runs:
                continue
            r = runs[name]
            lines.append(f"| {sweep} | {name} | {','.join(map(str, r['seeds']))} | "
                         + " | ".join(_mean(r["per_seed"], k) for k in keys) + " | "
                         + " | ".join("reference" if name == "mle" else _ratio_cell(r.get(f"{k}_vs_mle"))
                                      for k in keys[:3]) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["corpus", "enrich", "samples"])
    p.add_argument("--sweeps", default="toxicity,toxicity-threshold-0.2,toxicity-enriched",
                   help="folders under runs/findings to read (samples)")
    args = p.parse_args(argv)
    if args.what == "enrich":
        print(json.dumps(enrich(), indent=1))
        return 0
    record = json.loads(OUT.read_text()) if OUT.exists() else {}
    if args.what == "corpus":
        record["corpus"] = {"fortunes": corpus_mass(SCORED)}
        if ENRICHED.exists() and (ROOT / "runs/findings/toxicity-enriched/scored.jsonl").exists():
            record["corpus"]["fortunes-enriched"] = corpus_mass(ROOT / "runs/findings/toxicity-enriched/scored.jsonl")
    else:
        sweeps = [ROOT / "runs" / "findings" / s for s in args.sweeps.split(",")]
        record["samples"] = samples([s for s in sweeps if s.is_dir()])
    record[f"{args.what}_made_by"] = {"command": f"python bench/toxicity_investigation.py {' '.join(argv or sys.argv[1:])}",
                                      "commit": commit(), "cpu": cpu_name()}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(record, indent=1))
    if args.what == "samples":
        made = record["samples_made_by"]
        OUT.with_suffix(".md").write_text(
            f"<!-- written by `{made['command']}` at {made['commit']} on {made['cpu']} -->\n\n"
            + markdown(record["samples"]))
        print(markdown(record["samples"]))
    else:
        print(json.dumps(record[args.what], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
