"""The linear probe's share of an evaluation, and the quantile edges' share of a run
(issue 24: probe < 10% of an evaluation's time; the quantile computation reported).

One process: a tiny-preset PEP8 run with `objectives/conditional-quantiles` (4 buckets)
is trained through `phf.train.train` on the scored stdlib corpus (the demo's 12 MB),
with the demo's evaluation settings (250 samples x 128 tokens, 100k held-out tokens,
the probe's default 2,000 segments) but no training-time evaluation. Then:

* the evaluation (`evaluate_run`, as `phf eval` runs it) with and without the probe
  (eval.probe_segments 0), alternating; the probe's share is the `seconds` it records
  in results.json over that evaluation's wall time; cross-checked by the difference of
  the fastest evaluation with and without it (the fastest: the least slowed by other
  jobs; a single pair's difference follows their load more than the probe);
* the quantile edges (`transform_spec`, which `phf train` calls once: it reads the
  scored corpus and sorts its segment scores), timed on their own, over the wall time
  of the whole `train()` call (tokenizer, packing, edges, steps, saving).

A run of the demo's 800k tokens trains ~12x longer than this one's 64k, so the
quantile share measured here is an upper bound of the demo's.

    .venv/bin/python bench/probe_quantile_shares.py [--quick] [--repeats N] [--num-tokens N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def main(argv=None) -> dict:
    import torch

    from phf.config import load_config
    from phf.data.transforms import transform_spec
    from phf.evaluation.evaluate import evaluate_run
    from phf.train import train

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--num-tokens", type=int, default=None)
    ap.add_argument("--mb", type=float, default=12.0, help="MB of the scored stdlib corpus (the demo's: 12)")
    args = ap.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 2)
    num_tokens = args.num_tokens or (16384 if args.quick else 65536)
    # one thread: on the shared 2-core machine two threads' times follow the other jobs' load
    torch.set_num_threads(1)
    scored = common.scored_corpus(int(args.mb * 1e6))
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        cfg = load_config(["tasks/pep8", "objectives/conditional-quantiles", "models/tiny", "demo"],
                          [f"data.scored_path={scored}", f"training.output_dir={run_dir}",
                           f"training.num_tokens={num_tokens}", "training.report_to=[]", "eval.every_steps=0"]
                          + (["eval.num_samples=50"] if args.quick else []))
        t0 = time.perf_counter()
        train(cfg)
        train_s = time.perf_counter() - t0
        print(f"train(): {train_s:.1f} s for {num_tokens} tokens", flush=True)

        quantile_s, edges = [], None
        for _ in range(max(3, repeats)):
            with common.Timer() as t:
                edges = transform_spec(cfg.objective, cfg.task, str(scored))["edges"]
            quantile_s.append(t.seconds)
        print(f"quantile edges {edges}: {common.median(quantile_s):.2f} s", flush=True)

        off = cfg.eval.model_copy(update={"probe_segments": 0})
        timings = {"with_probe": [], "without_probe": []}
        probe_s, shares, diff_shares, retries, probe = [], [], [], 0, None
        for r in range(repeats):
            order = ["with_probe", "without_probe"][::(-1) ** r]

            def one_repeat(order=order):
                out = {}
                for kind in order:
                    with common.Timer() as t:
                        res = evaluate_run(run_dir, cfg.eval if kind == "with_probe" else off, cfg.task)
                    out[kind] = (t.seconds, res["probe"])
                return out

            this, n = common.clean_repeat(one_repeat)
            retries += n
            (with_s, probe), (without_s, _) = this["with_probe"], this["without_probe"]
            timings["with_probe"].append(with_s)
            timings["without_probe"].append(without_s)
            probe_s.append(probe["seconds"])
            shares.append(probe["seconds"] / with_s)
            diff_shares.append((with_s - without_s) / with_s)
            print(f"repeat {r}: eval {with_s:.1f} s with the probe ({probe['seconds']:.2f} s, {shares[-1]:.1%}), "
                  f"{without_s:.1f} s without", flush=True)

    share = common.median(shares)
    fastest = min(timings["with_probe"])
    by_difference = (fastest - min(timings["without_probe"])) / fastest
    quantile = common.median(quantile_s)
    e = cfg.eval
    result = {
        "preset": "tiny", "torch_threads": 1, "objective": "conditional-quantiles (4 buckets)",
        "scored_corpus_MB": round(scored.stat().st_size / 1e6, 2), "corpus_source_MB": args.mb,
        "train": {"num_tokens": num_tokens, "seconds": train_s, "tokens_per_s_overall": num_tokens / train_s},
        "eval_settings": {"num_samples": e.num_samples, "max_new_tokens": e.max_new_tokens,
                          "heldout_max_tokens": e.heldout_max_tokens, "probe_segments": e.probe_segments,
                          "scenarios": [s.name for s in e.scenarios] if e.scenarios else None},
        "probe": {"segments": probe["segments"], "auc": probe["auc"], "seconds": common.summary(probe_s)},
        "eval_seconds": {k: common.summary(v) for k, v in timings.items()},
        "probe_share_of_eval": common.summary(shares),
        "probe_share_of_eval_by_difference": {"fastest_evaluations": by_difference,
                                              "per_repeat": common.summary(diff_shares)},
        "quantile_edges": {"edges": edges, "seconds": common.summary(quantile_s),
                           "seconds_per_MB": quantile / (scored.stat().st_size / 1e6)},
        "quantile_share_of_train": quantile / train_s,
        "target": "probe < 10% of an evaluation's time; the quantile edges' share reported",
        "repeats_redone_after_a_stop": retries, "met": share < 0.10,
    }
    print(f"probe: {share:.1%} of an evaluation; quantile edges: {quantile / train_s:.2%} of the run's train()",
          flush=True)
    common.write_result("probe_quantile_shares", result)
    return result


if __name__ == "__main__":
    main()
