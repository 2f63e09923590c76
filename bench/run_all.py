"""Run every benchmark and write bench/RESULTS.md (commands, machine, medians, ratios).

    .venv/bin/python bench/run_all.py            # all CPU benchmarks, < 30 min on 2 cores
    .venv/bin/python bench/run_all.py --quick    # smaller and fewer repeats, < 5 min
    .venv/bin/python bench/run_all.py --demo     # also time `make demo` from scratch (~20 min more)
    .venv/bin/python bench/run_all.py --only scoring,packing
    .venv/bin/python bench/run_all.py --report   # rewrite RESULTS.md from the last results only

Each benchmark runs in its own process and writes bench/out/results/<name>.json;
RESULTS.md is made from those files, so a benchmark that was not run this time
(the demo, the GPU script) shows its last recorded result with its date.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

BENCHMARKS = ("scoring", "packing", "sampling", "decoding", "train_throughput", "objective_overhead",
              "schedule_overhead", "probe_quantile_shares", "mfu", "ray_scoring")
SCRIPTS = {name: f"bench/{name}.py" for name in BENCHMARKS} | {"demo": "bench/demo_time.py",
                                                               "gpu_mfu": "bench/gpu_mfu.py"}


def run(name: str, quick: bool) -> dict:
    cmd = [sys.executable, str(common.ROOT / SCRIPTS[name])] + (["--quick"] if quick and name != "demo" else [])
    print(f"== {name}: {' '.join(cmd)}", flush=True)
    t0 = time.time()
    log = common.OUT / f"{name}.log"
    common.OUT.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=common.ROOT, stdout=f, stderr=subprocess.STDOUT)
    took = time.time() - t0
    print(f"   {name}: exit {proc.returncode} in {took:.0f} s (log: {log.relative_to(common.ROOT)})", flush=True)
    return {"returncode": proc.returncode, "seconds": round(took, 1)}


#: results recorded on other machines (the GPU script, where this one has no GPU), kept in git
#: results kept in git: the GPU runs (no GPU here), and runs made by hand on a loaded machine
RECORDED = common.BENCH_DIR / "recorded"


def load(name: str) -> dict | None:
    """This machine's last result of `name`, else the one recorded in bench/recorded/."""
    for path in (common.RESULTS / f"{name}.json", RECORDED / f"{name}.json"):
        if path.exists():
            return json.loads(path.read_text())
    return None


def pct(x) -> str:
    return f"{100 * x:.1f}%"


def fx(x, digits=2) -> str:
    return f"{x:.{digits}f}x"


def rows_for(name: str, r: dict) -> list[tuple[str, str, str, str]]:
    """(benchmark, measured, target, met) rows of one result."""
    met = lambda ok: "yes" if ok else "**no**"  # noqa: E731
    out = []
    if "skipped" in r:
        return [(name, f"skipped: {r['skipped']}", "-", "**no**")]
    if name == "train_throughput":
        for preset, v in r["presets"].items():
            tps = v["tokens_per_s"]
            out.append((f"training throughput, MLE, {preset} (batch {v['batch_size']}x{v['block_size']}, fp32)",
                        f"{fx(v['ratio']['median'], 3)} (phf {tps['phf']['median']:.0f} vs Trainer "
                        f"{tps['hf']['median']:.0f} tok/s; ratios {v['ratio']['min']:.3f}-{v['ratio']['max']:.3f}, "
                        f"n={v['ratio']['n']})", ">= 1.0x", met(v["met"])))
        if "bf16_autocast_cpu" in r and "bf16_over_fp32" in r["bf16_autocast_cpu"]:
            b = r["bf16_autocast_cpu"]
            out.append(("bf16 autocast vs fp32 on this CPU (phf, tiny)",
                        f"{fx(b['bf16_over_fp32'], 3)} ({b['bf16_tokens_per_s']:.0f} vs {b['fp32_tokens_per_s']:.0f} "
                        f"tok/s)", "fp32 where bf16 is slower", "yes (auto = fp32 on CPU)"))
    elif name == "mfu":
        for preset, v in r["presets"].items():
            out.append((f"hardware use, {preset} (fp32)",
                        f"{pct(v['mfu'])} ({v['model_GFLOP_per_s']:.1f} model GFLOP/s over "
                        f"{v['matmul_GFLOP_per_s']['median']:.1f} matmul GFLOP/s)", ">= 50%", met(v["mfu"] >= 0.5)))
        if "tiny_gelu_new" in r:
            g = r["tiny_gelu_new"]
            out.append(("  (reference) tiny with GPT-2's unfused `gelu_new` instead of the presets' fused GELU",
                        f"the fused one is {fx(g['fused_speedup'], 3)} faster; MFU with gelu_new "
                        f"{pct(g['mfu_with_gelu_new'])}", "-", "-"))
    elif name == "gpu_mfu":
        main_run = r["runs"]["phf compiled"]
        out.append((f"GPU hardware use, {r['preset']}, {r['device']} (bf16, compiled, batch {r['batch_size']}x"
                    f"{r['block_size']}, {main_run['steps']} steps)",
                    f"{pct(r['mfu'])} ({main_run['tokens_per_s'] / 1e3:.0f}k tokens/s; "
                    f"{main_run['model_TFLOP_per_s']:.0f} model TFLOP/s over "
                    f"{r['matmul_TFLOP_per_s']['median']:.0f} matmul TFLOP/s)", ">= 40%", met(r["met"])))
        for kind, ratio in r.get("ratio_phf_over_hf", {}).items():
            out.append((f"  (reference) phf / plain Trainer on the GPU, {kind}", fx(ratio, 3), "-", "-"))
    elif name == "objective_overhead":
        for obj, v in r["ratio_vs_mle"].items():
            out.append((f"objective overhead, {obj} vs MLE (tiny)",
                        f"{fx(v['median'], 3)} (range {v['min']:.3f}-{v['max']:.3f}, n={v['n']})", ">= 0.95x",
                        met(v["median"] >= 0.95)))
    elif name == "schedule_overhead":
        v, t = r["ratio"], r["tokens_per_s"]
        out.append((f"objective schedule overhead, MLE then conditional vs conditional (tiny, batch {r['batch_size']}, "
                    f"{r.get('torch_threads', 'all')} thread(s))",
                    f"{fx(v['median'], 3)} ({t['scheduled']['median']:.0f} vs {t['unscheduled']['median']:.0f} "
                    f"tok/s; range {v['min']:.3f}-{v['max']:.3f}, n={v['n']})", ">= 0.95x", met(r["met"])))
    elif name == "probe_quantile_shares":
        s, d, e = r["probe_share_of_eval"], r["probe_share_of_eval_by_difference"], r["eval_settings"]
        out.append((f"linear probe's share of an evaluation (tiny, PEP8 conditional-quantiles run, {e['num_samples']} "
                    f"samples x {e['max_new_tokens']} tokens, {r['probe']['segments']} segments, "
                    f"{r['torch_threads']} thread(s))",
                    f"{pct(s['median'])} (probe {r['probe']['seconds']['median']:.2f} s of a "
                    f"{r['eval_seconds']['with_probe']['median']:.1f} s evaluation; range {pct(s['min'])}-"
                    f"{pct(s['max'])}, n={s['n']}; fastest evaluations' difference {pct(d['fastest_evaluations'])})",
                    "< 10% of an evaluation", met(r["met"])))
        q, t = r["quantile_edges"], r["train"]
        out.append((f"quantile edges' share of a run (4 buckets over {r['scored_corpus_MB']} MB of scored stdlib; "
                    f"`train()` of {t['num_tokens']:,} tokens)",
                    f"{pct(r['quantile_share_of_train'])} ({q['seconds']['median']:.2f} of {t['seconds']:.1f} s; "
                    f"{q['seconds_per_MB']:.3f} s per scored MB)", "reported", "-"))
    elif name == "scoring":
        m = r["MB_per_s"]
        out.append((f"PEP8 corpus scoring, pep8-ruff via score_corpus ({r['corpus']['MB']} MB stdlib)",
                    f"{fx(r['ratio']['median'], 1)} ({m['phf_pep8_ruff']['median']:.2f} vs "
                    f"{m['baseline_pycodestyle_1proc']['median']:.2f} MB/s)", ">= 10x on 2 cores",
                    met(r["ratio"]["median"] >= 10)))
        for k, v in r.get("ratio_other_backends", {}).items():
            out.append((f"  (reference) {k.removeprefix('phf_')}", fx(v, 1), "-", "-"))
    elif name == "sampling":
        for sc, v in r["scenarios"].items():
            s = v["samples_per_s"]
            out.append((f"sampling, {sc} ({r['samples']} samples x {r['max_new_tokens']} tokens, batch "
                        f"{r['batch_size']})", f"{fx(v['ratio']['median'], 3)} ({s['phf']['median']:.2f} vs "
                        f"{s['generate']['median']:.2f} samples/s)", ">= 1.0x", met(v["ratio"]["median"] >= 1.0)))
    elif name == "decoding":
        for mode, v in r["modes"].items():
            what = "total vs n x plain" if mode.startswith("rerank") else "per sampled token vs plain"
            out.append((f"decoding {mode}, {what} ({r['samples']} samples x {r['max_new_tokens']} tokens, "
                        f"{r['run']})", f"{fx(v['ratio']['median'], 3)} (range {v['ratio']['min']:.3f}-"
                        f"{v['ratio']['max']:.3f}, n={v['ratio']['n']}; resampled {v['resampled_share'] or 0:.3f})",
                        v["target"], met(v["met"])))
    elif name == "packing":
        t1, t4 = r["1x"]["tokens_per_s"]["median"], r["4x"]["tokens_per_s"]["median"]
        tc = r["1x conditional"]["tokens_per_s"]["median"]
        out.append(("packing throughput (1x / 4x / 1x conditional)",
                    f"{t1 / 1e6:.2f}M / {t4 / 1e6:.2f}M / {tc / 1e6:.2f}M tokens/s", ">= 1M tokens/s",
                    met(min(t1, t4) >= 1e6)))
        out.append((f"packing peak memory, {r['corpora_MB']['1x']} MB vs {r['corpora_MB']['4x']} MB corpus",
                    f"{r['1x']['peak_rss_mb']['median']:.0f} MB vs {r['4x']['peak_rss_mb']['median']:.0f} MB "
                    f"({fx(r['peak_4x_over_1x'], 3)}; 4x = the 1x records four times)", "the same (<= 1.05x)",
                    met(r["peak_4x_over_1x"] <= 1.05)))
        if "4x other documents" in r:
            o = r["4x other documents"]
            out.append((f"  (reference) {r['corpora_MB']['4x']} MB of other stdlib files (larger single files)",
                        f"{o['tokens_per_s']['median'] / 1e6:.2f}M tokens/s, peak {o['peak_rss_mb']['median']:.0f} MB",
                        "-", "-"))
    elif name == "ray_scoring":
        o, c = r["fixed_overhead"], r["corpus"]
        ratio = o["ratio_ray_over_local"]
        out.append((f"Ray engine fixed overhead: `phf score --engine ray` (local Ray started by the run, 2 CPUs) vs "
                    f"the local engine (2 processes), pep8, {c['MB']} MB / {c['documents']} files / {c['shards']} "
                    f"shards", f"{fx(ratio['median'])} the local time ({o['ray_engine_2_cpus_with_startup_s']['median']:.1f}"
                    f" vs {o['local_engine_2_workers_s']['median']:.1f} s; ratios {ratio['min']:.2f}-{ratio['max']:.2f}, "
                    f"n={ratio['n']})", "-", "-"))
        s = r["ray_scaling"]
        out.append(("Ray engine throughput, 1 -> 2 CPUs (instance already running)",
                    f"{s['1']['docs_per_s']:.1f} -> {s['2']['docs_per_s']:.1f} docs/s ({fx(r['speedup_2_over_1'])})",
                    "-", "-"))
    elif name == "demo":
        how = f"sum of the stages of {r['recorded_from']}" if r.get("recorded_from") else f"exit {r['returncode']}"
        out.append(("`make demo` wall time (pep8, 2 cores)", f"{r['wall_min']:.1f} min ({how})",
                    "<= 20 min", met(r["met"])))
    return out


def details(name: str, r: dict) -> list[str]:
    lines = []
    if name == "scoring":
        for key, a in r["agreement"].items():
            if not isinstance(a, dict):
                continue
            lines.append(f"- agreement of `{key}` with pycodestyle on {r['agreement']['documents']} documents / "
                         f"{r['agreement']['lines']} lines: document Spearman {a['document_spearman']:.3f}, "
                         f"documents on the same side of the filtering threshold "
                         f"{pct(a['document_filter_label_agreement'])}; line Spearman {a['line_spearman']:.3f}, "
                         f"line aligned/misaligned labels agree {pct(a['line_label_agreement'])} "
                         f"(misaligned lines: pycodestyle {a['misaligned_lines']['pycodestyle']}, ruff "
                         f"{a['misaligned_lines']['ruff']}, both {a['misaligned_lines']['both']}); violation counts "
                         f"that differ (pycodestyle, ruff): "
                         + ", ".join(f"{c} {v[0]}/{v[1]}" for c, v in a["violations_by_code_where_they_differ"].items()))
    if name == "gpu_mfu":
        for path in sorted(RECORDED.glob("gpu_mfu*.json")):
            v = json.loads(path.read_text())
            runs = ", ".join(f"{k} {x['tokens_per_s'] / 1e3:.0f}k tok/s ({pct(x['mfu'])})" for k, x in v["runs"].items())
            lines.append(f"- `{path.relative_to(common.ROOT)}` (batch {v['batch_size']}): {runs}"
                         + (f". {v['note']}" if v.get("note") else ""))
    if name == "demo" and r.get("stages_s"):
        lines.append("- demo stages (s): " + ", ".join(f"{k} {v}" for k, v in r["stages_s"].items()))
    return lines


def write_report(ran: dict) -> Path:
    results = {name: load(name) for name in SCRIPTS}
    machine = next((r["machine"] for n in (*ran, *results) if (r := results.get(n))), common.machine_facts())
    md = ["# phf benchmarks", "",
          "Written by `bench/run_all.py` (`make bench`). Every ratio is measured in one process against its",
          "baseline, interleaved and repeated on a shared, noisy machine: medians. See `bench/NOTES.md` for",
          "the profiles and what each optimisation was expected to gain and gained.", "",
          "## Machine", ""]
    for k in ("Model name", "CPU(s)", "cores", "cpu_capability", "avx512", "avx512_bf16", "torch", "transformers",
              "python", "torch_threads", "cuda", "load_average_at_start"):
        if k in machine:
            md.append(f"- {k}: {machine[k]}")
    md += ["", "## Results", "", "| benchmark | measured | target | met |", "| --- | --- | --- | --- |"]
    for name in SCRIPTS:
        r = results.get(name)
        if r is None:
            continue
        for row in rows_for(name, r):
            md.append("| " + " | ".join(row) + " |")
    missed = [f"- {b}: {m} (target {t})" for name in SCRIPTS if (r := results.get(name))
              for b, m, t, ok in rows_for(name, r) if ok == "**no**"]
    if missed:
        md += ["", "## Targets not met", "", *missed, "",
               "By how much and why: `bench/NOTES.md`, section \"Targets: where they stand after session 2\"."]
    md += ["", "## Details", ""]
    for name in SCRIPTS:
        r = results.get(name)
        if r is None:
            how = "not run yet" + (" (no GPU on this machine)" if name == "gpu_mfu" else "")
            md.append(f"- **{name}**: {how}; command: `.venv/bin/python {SCRIPTS[name]}`")
            continue
        status = "this run" if name in ran else f"an earlier run ({r['finished']}" + (
            f", on {r['device']}, recorded in bench/recorded/)" if name == "gpu_mfu" else ")")
        took = f", {ran[name]['seconds']:.0f} s" if name in ran else ""
        md.append(f"- **{name}** ({status}{took}): `{r['command']}`, finished {r['finished']}, "
                  f"load average at start {r['machine'].get('load_average_at_start')}")
        md += ["  " + line for line in details(name, r)]
    failed = [n for n, v in ran.items() if v["returncode"] != 0]
    if failed:
        md += ["", "Failed this run (see bench/out/<name>.log): " + ", ".join(failed)]
    path = common.BENCH_DIR / "RESULTS.md"
    path.write_text("\n".join(md) + "\n")
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--demo", action="store_true", help="also time the demo from scratch")
    ap.add_argument("--only", default=None, help="comma-separated benchmark names")
    ap.add_argument("--report", action="store_true", help="only rewrite RESULTS.md from the last results")
    args = ap.parse_args(argv)
    names = args.only.split(",") if args.only else list(BENCHMARKS) + (["demo"] if args.demo else [])
    unknown = [n for n in names if n not in SCRIPTS]
    if unknown:
        ap.error(f"unknown benchmarks {unknown}; known: {', '.join(SCRIPTS)}")
    ran = {}
    t0 = time.time()
    if not args.report:
        for name in names:
            ran[name] = run(name, args.quick)
    path = write_report(ran)
    print(f"wrote {path.relative_to(common.ROOT)} in {time.time() - t0:.0f} s")
    return 1 if any(v["returncode"] for v in ran.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
