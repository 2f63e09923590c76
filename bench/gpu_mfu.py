"""Hardware use on a GPU: phf MLE training's model FLOP/s over the GPU's bf16 matmul FLOP/s.

Same measure as `bench/mfu.py` (6 * N + attention FLOPs per token, over the best
square-matmul FLOP/s measured in the same script), on CUDA with bf16 autocast (what
`training.bf16: auto` picks there), for the small and gpt2-small presets, plus the
phf / plain transformers.Trainer throughput ratio on the same GPU. Skips (and says so)
when there is no GPU; `run_all.py` does not run it.

    .venv/bin/python bench/gpu_mfu.py [--presets small,gpt2-small] [--steps 10]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

common.PRESET_SHAPES.setdefault("gpt2-small", dict(vocab_size=16384, block_size=1024, batch_size=8))


def main(argv=None) -> dict:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="small,gpt2-small")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=None)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: gpu_mfu skipped")
        return {"skipped": "no CUDA device"}
    import trainloop
    from mfu import matmul_flops, model_flops_per_token

    bf16 = torch.cuda.is_bf16_supported()
    dtype = torch.bfloat16 if bf16 else torch.float16
    out = {"target": ">= 50% of dense matmul FLOP/s", "dtype": str(dtype), "presets": {}}
    for preset in args.presets.split(","):
        shape = common.PRESET_SHAPES[preset]
        batch = args.batch_size or shape["batch_size"]
        # enough blocks for warm-up + steps, however large the batch
        need_bytes = int((args.steps + 3) * batch * shape["block_size"] * 4.5)
        path, tok = common.packed("mle", preset, max_bytes=max(4_000_000, need_bytes))
        peaks = [matmul_flops(dtype, sizes=(4096, 8192), device="cuda")]
        runs = {}
        for kind in ("hf", "phf"):
            run = trainloop.timed_run(kind, path, tok, preset, batch_size=batch, warmup=2, steps=args.steps,
                                      bf16=bf16, return_trainer=True)
            trainer = run.pop("trainer")
            per_token, n = model_flops_per_token(trainer.model, shape["block_size"])
            run["model_flops_per_s"] = run["tokens_per_s"] * per_token
            runs[kind] = run
            peaks.append(matmul_flops(dtype, sizes=(4096, 8192), device="cuda"))
        peak = common.median(peaks)
        out["presets"][preset] = {
            "batch_size": batch, "matmul_params": n, "tokens_per_s": {k: r["tokens_per_s"] for k, r in runs.items()},
            "ratio_phf_over_hf": runs["phf"]["tokens_per_s"] / runs["hf"]["tokens_per_s"],
            "matmul_TFLOP_per_s": peak / 1e12, "mfu": runs["phf"]["model_flops_per_s"] / peak,
        }
        print(preset, out["presets"][preset], flush=True)
    out["met"] = all(v["mfu"] >= 0.5 for v in out["presets"].values())
    common.write_result("gpu_mfu", out)
    return out


if __name__ == "__main__":
    main()
