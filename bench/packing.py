"""Packing: tokens/s of `phf.data.packing.pack`, and its peak memory at 1x and 4x the corpus.

`pack` reads scored records (JSONL), tokenizes them with per-token segment scores,
and streams blocks to disk. Each measurement runs in a fresh process, so its peak
RSS (ru_maxrss) is its own: the target is >= 1M tokens/s and the same peak memory
for a corpus 4x as large. Conditional packing (control tokens inserted) is measured
at 1x too. The 1x corpus is the first 4 MB of the stdlib (quick: 2), scored with
pep8-ruff (any scores do: packing does not look at their values); the 4x corpus is
the same records four times over, so that only the corpus size changes (peak memory
also grows with the largest single document, ~100 bytes per token of it, whatever
the corpus size: a "different documents" 16 MB corpus is measured for reference).

    .venv/bin/python bench/packing.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def child(scored: str, objective: str) -> None:
    """Runs in its own process: pack `scored`, print tokens/s and memory as JSON."""
    import resource
    import time

    from phf.data.packing import PackSpec, pack
    from phf.records import read_scored

    tok = common.tokenizer(common.PRESET_SHAPES["tiny"]["vocab_size"])
    if objective == "conditional":
        from phf.tokenizer import add_control_tokens

        add_control_tokens(tok)
    tok.backend_tokenizer.encode_batch(["warm up"])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        stats = pack(read_scored(scored), tok, PackSpec(block_size=256, objective=objective), out)
        seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tokens = sum(stats.tokens.values())
    print(json.dumps({"stopped_s": common.stopped_seconds(), "tokens": tokens, "documents": sum(stats.documents.values()), "seconds": seconds,
                      "tokens_per_s": tokens / seconds, "peak_rss_mb": peak, "rss_before_pack_mb": before,
                      "pack_rss_growth_mb": peak - before}))


def run_child(scored: Path, objective: str = "mle") -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", str(scored), objective],
                          capture_output=True, text=True, env=os.environ.copy())
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--child", nargs=2, metavar=("SCORED", "OBJECTIVE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child)
        return {}
    mb = 2 if args.quick else 4
    repeats = args.repeats or (1 if args.quick else 3)
    scorer = "pep8-ruff"
    try:
        from phf.scorers import get_scorer

        get_scorer(scorer)
    except ValueError:
        scorer = "pep8"
    common.tokenizer(common.PRESET_SHAPES["tiny"]["vocab_size"])  # build the fixture outside the timings
    one = common.scored_corpus(mb * 1_000_000, scorer)
    four = common.FIXTURES / f"4x-{one.name}"
    if not four.exists():
        four.write_text(one.read_text() * 4)
    corpora = {"1x": one, "4x": four, "4x other documents": common.scored_corpus(4 * mb * 1_000_000, scorer)}
    runs = {"1x": [], "4x": [], "1x conditional": [], "4x other documents": []}
    for r in range(repeats):
        for key in ("1x", "4x", "1x conditional") + (("4x other documents",) if r == 0 else ()):
            for _ in range(4):  # again if a SIGSTOP from another job hit the measurement
                res = run_child(corpora[key.replace(" conditional", "")], "conditional" if "conditional" in key else "mle")
                if res["stopped_s"] <= 0.5:
                    break
            runs[key].append(res)
            print(f"repeat {r} {key}: {res['tokens_per_s'] / 1e6:.2f}M tokens/s, peak {res['peak_rss_mb']:.0f} MB "
                  f"(+{res['pack_rss_growth_mb']:.0f} MB during pack)", flush=True)
    result = {"corpora_MB": {"1x": mb, "4x": 4 * mb}, "scorer": scorer,
              "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM")}
    for key, rs in runs.items():
        result[key] = {"tokens": rs[0]["tokens"], "tokens_per_s": common.summary(r["tokens_per_s"] for r in rs),
                       "peak_rss_mb": common.summary(r["peak_rss_mb"] for r in rs),
                       "pack_rss_growth_mb": common.summary(r["pack_rss_growth_mb"] for r in rs)}
    peak1, peak4 = result["1x"]["peak_rss_mb"]["median"], result["4x"]["peak_rss_mb"]["median"]
    tps = min(result["1x"]["tokens_per_s"]["median"], result["4x"]["tokens_per_s"]["median"])
    result["peak_4x_over_1x"] = peak4 / peak1
    result["target"] = ">= 1M tokens/s; peak memory the same at 1x and 4x (within 5%)"
    result["met"] = tps >= 1e6 and peak4 / peak1 <= 1.05
    common.write_result("packing", result)
    return result


if __name__ == "__main__":
    main()
