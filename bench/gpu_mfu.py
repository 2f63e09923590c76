"""Hardware use on a GPU: phf training of the gpt2-small preset, tokens/s and MFU.

MFU is the model's FLOP/s (6 * N + attention per token, as in `bench/mfu.py`) over
the card's dense bf16 matmul FLOP/s, measured in this script before and after the
training runs (median). Training runs as `phf train` does on a GPU with the
gpt2-small config: bf16 autocast, SDPA attention, fused AdamW, and torch.compile
(`training.compile: auto`). The same run without compile, and a plain
`transformers.Trainer` with and without compile on the same model, data, batch and
settings, are measured beside it. Target (issue 6): >= 40% MFU.

The fixtures (a BPE tokenizer with the preset's 50,257-token vocabulary, trained on
the stdlib corpus, and its packed 1024-token blocks) are built on a CPU with
`--prepare` and carried to the GPU machine; the run reads them and goes over the
blocks as often as the steps need.

    .venv/bin/python bench/gpu_mfu.py --prepare          # on any machine
    python3 bench/gpu_mfu.py [--steps 300] [--batch-size 16]   # on the GPU
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

PRESET = "gpt2-small"
TARGET = 0.40


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepare", action="store_true", help="build the fixtures and stop (no GPU needed)")
    ap.add_argument("--steps", type=int, default=300, help="timed steps of the main (phf, compiled) run")
    ap.add_argument("--baseline-steps", type=int, default=100, help="timed steps of each other run")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--preset", default=PRESET)
    ap.add_argument("--eager-steps", type=int, default=None,
                    help="timed steps of the eager runs (default: --baseline-steps)")
    ap.add_argument("--only-main", action="store_true", help="only the phf compiled run")
    ap.add_argument("--allow-cpu", action="store_true", help="run on CPU (to check the script, not to measure)")
    args = ap.parse_args(argv)
    path, tok = common.packed("mle", args.preset)
    if args.prepare:
        print(f"fixtures ready: {path} ({len(tok)} tokens in the vocabulary)")
        return {}

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print("no CUDA device: gpu_mfu skipped")
        return {"skipped": "no CUDA device"}
    import trainloop
    from mfu import matmul_flops, model_flops_per_token

    device = "cuda" if cuda else "cpu"
    bf16 = cuda and torch.cuda.is_bf16_supported()
    dtype = torch.bfloat16 if bf16 else torch.float32
    sizes = (4096, 8192) if cuda else (512,)
    block = common.PRESET_SHAPES[args.preset]["block_size"]
    peaks = [matmul_flops(dtype, sizes=sizes, device=device)]
    # (kind, compiled, timed steps); the main run is phf as `training.compile: auto` runs it
    eager = args.eager_steps or args.baseline_steps
    plan = [("hf", False, eager), ("phf", False, eager),
            ("hf", True, args.baseline_steps), ("phf", True, args.steps)]
    if args.only_main:
        plan = plan[-1:]

    runs = {}
    for kind, compiled, steps in plan:
        name = f"{kind}{' compiled' if compiled else ''}"
        run = trainloop.timed_run(kind, path, tok, args.preset, batch_size=args.batch_size, steps=steps,
                                  warmup=3 if compiled else 2, bf16=bf16, compile=compiled, repeat_data=True,
                                  return_trainer=True)
        trainer = run.pop("trainer")
        model = trainer.accelerator.unwrap_model(trainer.model)
        per_token, n = model_flops_per_token(model, block)
        rows = model.get_input_embeddings().weight.shape[0]  # the vocabulary padded to a multiple of 64
        run.update(steps=steps, model_TFLOP_per_s=run["tokens_per_s"] * per_token / 1e12)
        runs[name] = run
        del trainer, model
        if cuda:
            torch.cuda.empty_cache()
        print(name, {k: round(v, 4) if isinstance(v, float) else v for k, v in run.items()}, flush=True)
    peaks.append(matmul_flops(dtype, sizes=sizes, device=device))
    peak = common.median(peaks) / 1e12
    for run in runs.values():
        run["mfu"] = run["model_TFLOP_per_s"] / peak
    main_run = runs["phf compiled"]
    out = {
        "preset": args.preset, "device": torch.cuda.get_device_name(0) if cuda else "cpu", "dtype": str(dtype),
        "batch_size": args.batch_size, "block_size": block, "vocab_size": len(tok), "matmul_params": n,
        "model_flops_per_token": per_token, "matmul_TFLOP_per_s": {"median": peak, "each": [p / 1e12 for p in peaks]},
        "runs": runs, "target": f">= {TARGET:.0%} MFU (phf, compiled)", "mfu": main_run["mfu"],
        "embedding_rows": rows,
        "ratio_phf_over_hf": {} if args.only_main else {
            "eager": runs["phf"]["tokens_per_s"] / runs["hf"]["tokens_per_s"],
            "compiled": main_run["tokens_per_s"] / runs["hf compiled"]["tokens_per_s"]},
        "met": main_run["mfu"] >= TARGET,
    }
    # a CPU check of the script is not a GPU measurement: kept apart from RESULTS.md's row
    common.write_result("gpu_mfu" if cuda else "gpu_mfu_cpu_check", out)
    return out


if __name__ == "__main__":
    main()
