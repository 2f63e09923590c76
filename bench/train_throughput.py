"""Training throughput (tokens/s), MLE: phf's PHFTrainer vs a plain transformers.Trainer.

Same model (a fresh GPT-2 of the preset, same seed), same packed stdlib blocks, batch,
dtype and TrainingArguments; the baseline lets the model compute its own causal-LM
loss. Each repeat runs both back to back (the order alternates between repeats);
the ratio phf / baseline is taken per repeat and reported as the median.

Also checks `training.bf16: auto` on this machine: one phf run with bf16 autocast
against fp32 (tiny preset, same batch), reported as a ratio.

`--llama` instead compares architectures at equal parameter count: phf's MLE training of
`llama-tiny` (RoPE, RMSNorm, SwiGLU, no biases) against GPT-2 `tiny`, same blocks, batch
and vocabulary, interleaved; the ratio llama / GPT-2 per repeat, reported as the median
(written to bench/out/results/train_throughput_llama.json).

    .venv/bin/python bench/train_throughput.py [--quick] [--presets tiny,small]
    .venv/bin/python bench/train_throughput.py --llama [--repeats 4]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import trainloop  # noqa: E402

# steps per run (after one warm-up step) and batch per preset; the small preset runs at
# a smaller batch than its config (16) to keep `make bench` under 30 minutes on 2 cores
PLAN = {
    # tiny: 12 steps a run, as 5-step runs swung 0.86-1.10 between repeats (session 2)
    "full": {"tiny": dict(batch_size=16, steps=12, repeats=5), "small": dict(batch_size=8, steps=2, repeats=3)},
    "quick": {"tiny": dict(batch_size=16, steps=3, repeats=2), "small": dict(batch_size=4, steps=2, repeats=1)},
}


def measure(preset: str, batch_size: int, steps: int, repeats: int) -> dict:
    path, tok = common.packed("mle", preset)
    runs = {"hf": [], "phf": []}
    ratios = []
    retries = 0
    for r in range(repeats):
        order = ("hf", "phf") if r % 2 == 0 else ("phf", "hf")

        def one_repeat():
            return {kind: trainloop.timed_run(kind, path, tok, preset, batch_size=batch_size, steps=steps)
                    for kind in order}

        this, n = common.clean_repeat(one_repeat)
        retries += n
        for kind in order:
            runs[kind].append(this[kind]["tokens_per_s"])
        ratios.append(this["phf"]["tokens_per_s"] / this["hf"]["tokens_per_s"])
        print(f"{preset} repeat {r}: hf {this['hf']['tokens_per_s']:.0f} tok/s, "
              f"phf {this['phf']['tokens_per_s']:.0f} tok/s, ratio {ratios[-1]:.3f}", flush=True)
    shape = common.PRESET_SHAPES[preset]
    return {"preset": preset, "params": this["phf"]["params"], "block_size": shape["block_size"],
            "batch_size": batch_size, "steps_per_run": steps, "dtype": "float32",
            "tokens_per_s": {k: common.summary(v) for k, v in runs.items()},
            "ratio": common.summary(ratios), "met": common.median(ratios) >= 1.0, "repeats_redone_after_a_stop": retries}


def llama_vs_gpt2(batch_size: int = 8, steps: int = 2, repeats: int = 4) -> dict:
    """phf MLE tokens/s of llama-tiny vs GPT-2 tiny on the same packed blocks, one torch
    thread (on a loaded 2-core machine two threads per matmul swing with the load)."""
    import torch

    torch.set_num_threads(1)
    # llama-tiny trains on tiny's shapes: the same tokenizer, blocks and batch
    common.PRESET_SHAPES.setdefault("llama-tiny", common.PRESET_SHAPES["tiny"])
    path, tok = common.packed("mle", "tiny", max_bytes=1_000_000)
    rates = {"tiny": [], "llama-tiny": []}
    ratios, retries, params = [], 0, {}
    for r in range(repeats):
        order = ("tiny", "llama-tiny") if r % 2 == 0 else ("llama-tiny", "tiny")

        def one_repeat():
            return {p: trainloop.timed_run("phf", path, tok, p, batch_size=batch_size, steps=steps) for p in order}

        this, n = common.clean_repeat(one_repeat)
        retries += n
        for preset in order:
            rates[preset].append(this[preset]["tokens_per_s"])
            params[preset] = this[preset]["params"]
        ratios.append(this["llama-tiny"]["tokens_per_s"] / this["tiny"]["tokens_per_s"])
        print(f"repeat {r}: GPT-2 tiny {this['tiny']['tokens_per_s']:.0f} tok/s, llama-tiny "
              f"{this['llama-tiny']['tokens_per_s']:.0f} tok/s, ratio {ratios[-1]:.3f}", flush=True)
    shape = common.PRESET_SHAPES["tiny"]
    return {"vocab_size": len(tok), "block_size": shape["block_size"], "batch_size": batch_size,
            "steps_per_run": steps, "dtype": "float32", "torch_threads": 1, "params": params,
            "tokens_per_s": {k: common.summary(v) for k, v in rates.items()},
            "llama_over_gpt2": common.summary(ratios), "repeats_redone_after_a_stop": retries}


def bf16_check(batch_size: int = 4) -> dict:
    """phf fp32 vs phf bf16 autocast, tiny preset, one step after warm-up each."""
    import torch

    path, tok = common.packed("mle", "tiny")
    fp32 = trainloop.timed_run("phf", path, tok, "tiny", batch_size=batch_size, steps=1)
    try:
        bf16 = trainloop.timed_run("phf", path, tok, "tiny", batch_size=batch_size, steps=1, bf16=True)
    except Exception as e:  # noqa: BLE001 - e.g. no bf16 support at all
        return {"error": f"{type(e).__name__}: {e}"}
    return {"fp32_tokens_per_s": fp32["tokens_per_s"], "bf16_tokens_per_s": bf16["tokens_per_s"],
            "bf16_over_fp32": bf16["tokens_per_s"] / fp32["tokens_per_s"],
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "note": "training.bf16=auto resolves to fp32 on CPU"}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--presets", default="tiny,small")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--no-bf16-check", action="store_true")
    ap.add_argument("--llama", action="store_true", help="llama-tiny vs GPT-2 tiny at equal parameters, only")
    args = ap.parse_args(argv)
    if args.llama:
        result = llama_vs_gpt2(repeats=args.repeats or (1 if args.quick else 4))
        common.write_result("train_throughput_llama", result)
        return result
    plan = PLAN["quick" if args.quick else "full"]
    result = {"target": ">= 1.0x a plain transformers.Trainer", "presets": {}}
    for preset in args.presets.split(","):
        p = dict(plan[preset])
        if args.repeats:
            p["repeats"] = args.repeats
        result["presets"][preset] = measure(preset, **p)
    result["met"] = all(v["met"] for v in result["presets"].values())
    if not args.quick and not args.no_bf16_check:
        result["bf16_autocast_cpu"] = bf16_check()
    common.write_result("train_throughput", result)
    return result


if __name__ == "__main__":
    main()
