"""Decoding modes: sampling time of each mode against plain sampling, in one process.

At the demo's settings (64 samples of 128 tokens in one batch, temperature 0.7, top-p
0.9) on a trained conditional run (default: the PEP8 findings' seed-42 conditional run;
a run that writes lines, so retag and tag-aware meet real boundaries), each repeat times
every mode back to back in a rotating order. Reported per mode: seconds per sampled
token relative to plain (guidance target <= 2.2x: two streams in one batched forward;
retag and tag-aware <= 1.3x; guidance-untagged, the two streams without re-tagging, is
timed too), and for rerank:n its total time against n x plain
(target: within 10%).

    .venv/bin/python bench/decoding.py [--run RUN_DIR] [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

DEFAULT_RUN = common.ROOT / "runs/findings/pep8/conditional/seed-42"
MODES = ("plain", "retag", "guidance:1.5", "guidance-untagged:1.5", "tag-aware", "tag-aware:0.5:ratio", "rerank:4")
#: per-token time against plain; the ratio judge runs a second stream, as guidance does.
#: guidance (the default) also re-tags every segment; guidance-untagged is the two streams
#: alone, which tells the cost of the batched second stream from that of the tag steps
TARGETS = {"retag": 1.3, "guidance:1.5": 2.2, "guidance-untagged:1.5": 2.2, "tag-aware": 1.3,
           "tag-aware:0.5:ratio": 2.2}


def time_mode(model, tok, mode: str, n: int, max_new_tokens: int, scorer) -> tuple[float, dict]:
    from phf.evaluation.config import parse_decoding
    from phf.evaluation.sampling import generate_samples
    from phf.tokenizer import ALIGNED, MISALIGNED

    stats: dict = {}
    with common.Timer() as t:
        generate_samples(model, tok, n, prefix_text=ALIGNED, forbidden_texts=[MISALIGNED], max_new_tokens=max_new_tokens,
                         batch_size=n, seed=0, progress=False, decoding=parse_decoding(mode), segment=scorer.segment,
                         rank=lambda texts, i: scorer.score_texts(texts), stats=stats)
    return t.seconds, stats


def main(argv=None) -> dict:
    import torch

    from phf.model import load_model
    from phf.scorers import get_scorer
    from phf.tokenizer import load_tokenizer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=str(DEFAULT_RUN), help="a conditional run folder (default: %(default)s)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's); 1 on a machine loaded by other jobs")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not (Path(args.run) / "config.yaml").exists():
        raise SystemExit(f"{args.run}: not a trained run; train one (python bench/findings.py --tasks pep8, or "
                         "phf sweep --task pep8 --objectives mle,conditional) or pass --run")
    repeats = args.repeats or (2 if args.quick else 3)
    n, max_new_tokens = (32, 64) if args.quick else (64, 128)
    model, tok = load_model(args.run).eval(), load_tokenizer(args.run)
    scorer = get_scorer("pep8")
    seconds = {m: [] for m in MODES}
    per_token = {m: [] for m in MODES}
    ratios = {m: [] for m in MODES if m != "plain"}
    shares = {}
    for r in range(repeats):
        order = MODES[r % len(MODES):] + MODES[:r % len(MODES)]

        def one_repeat():
            return {m: time_mode(model, tok, m, n, max_new_tokens, scorer) for m in order}

        this, _ = common.clean_repeat(one_repeat)
        plain_s, plain_stats = this["plain"]
        plain_tok = plain_s / max(plain_stats["sampled_tokens"], 1)
        for m, (s, stats) in this.items():
            seconds[m].append(s)
            per_token[m].append(s / max(stats["sampled_tokens"], 1))
            shares[m] = stats.get("resampled_share", 0.0)
            if m.startswith("rerank"):
                k = int(m.split(":")[1])
                ratios[m].append(s / (k * plain_s))  # the whole rerank against k plain draws
            elif m != "plain":
                ratios[m].append(per_token[m][-1] / plain_tok)
        print(f"repeat {r}: " + ", ".join(f"{m} {this[m][0]:.2f}s" for m in MODES), flush=True)
    rows = {}
    for m, values in ratios.items():
        med = common.median(values)
        if m.startswith("rerank"):
            target, met = "n x plain within 10%", abs(med - 1.0) <= 0.10
        else:
            target, met = f"<= {TARGETS[m]}x plain per token", med <= TARGETS[m]
        rows[m] = {"ratio": common.summary(values), "target": target, "met": met,
                   "seconds": common.summary(seconds[m]), "resampled_share": shares.get(m)}
    result = {"run": common._rel(args.run), "samples": n, "batch_size": n, "max_new_tokens": max_new_tokens,
              "torch_threads": torch.get_num_threads(), "plain_seconds": common.summary(seconds["plain"]),
              "modes": rows, "met": all(v["met"] for v in rows.values())}
    for m, v in rows.items():
        print(f"{m}: {v['ratio']['median']:.3f}x ({v['target']}: {'met' if v['met'] else 'NOT met'})")
    common.write_result("decoding", result)
    return result


if __name__ == "__main__":
    main()
