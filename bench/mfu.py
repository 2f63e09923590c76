"""Hardware use: model FLOP/s of phf MLE training over this machine's dense matmul FLOP/s.

Model FLOPs per token = 6 * N + 12 * n_layer * n_embd * block_size, with N the
parameters that take part in matmuls (every parameter but the position embeddings;
the token embedding counts once, as the tied LM head) and the second term the
attention score and value products, forward and backward (no causal discount), as
in the PaLM paper's MFU. The reference is the best FLOP/s of square fp32 `torch.mm`
(sizes 1024-4096) on all of torch's threads, measured right before and after each
training run in the same process (the median of those is the denominator), so a
machine that other jobs slow down slows both sides.

    .venv/bin/python bench/mfu.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import trainloop  # noqa: E402

PLAN = {"full": {"tiny": dict(batch_size=16, steps=5), "small": dict(batch_size=8, steps=2)},
        "quick": {"tiny": dict(batch_size=16, steps=3)}}


def matmul_flops(dtype=None, sizes=(1024, 2048, 4096), seconds: float = 0.6, device: str = "cpu") -> float:
    """Best FLOP/s of an n x n matmul over `sizes` (each timed for about `seconds`)."""
    import torch

    dtype = dtype or torch.float32
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, dtype=dtype, device=device)
        b = torch.randn(n, n, dtype=dtype, device=device)
        c = a @ b  # warm-up
        _sync(device)
        reps, t = 0, 0.0
        t0 = time.perf_counter()
        while t < seconds:
            torch.mm(a, b, out=c)
            reps += 1
            _sync(device)
            t = time.perf_counter() - t0
        best = max(best, 2 * n ** 3 * reps / t)
    return best


def _sync(device):
    import torch

    if device != "cpu" and torch.cuda.is_available():
        torch.cuda.synchronize()


def model_flops_per_token(model, block_size: int) -> tuple[float, int]:
    cfg = model.config
    n = sum(p.numel() for name, p in model.named_parameters() if "wpe" not in name)
    return 6 * n + 12 * cfg.n_layer * cfg.n_embd * block_size, n


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args(argv)
    plan = PLAN["quick" if args.quick else "full"]
    repeats = args.repeats or (1 if args.quick else 2)
    out = {"target": ">= 50% of dense matmul FLOP/s (fp32)", "presets": {}}
    for preset, p in plan.items():
        path, tok = common.packed("mle", preset)
        shape = common.PRESET_SHAPES[preset]
        peaks, runs = [matmul_flops()], []
        for _ in range(repeats):
            run, _ = common.clean_repeat(lambda: trainloop.timed_run("phf", path, tok, preset, return_trainer=True, **p))
            trainer = run.pop("trainer")
            per_token, n = model_flops_per_token(trainer.model, shape["block_size"])
            run["model_flops_per_s"] = run["tokens_per_s"] * per_token
            runs.append(run)
            peaks.append(common.clean_repeat(matmul_flops)[0])
        peak = common.median(peaks)
        model_flops = common.median([r["model_flops_per_s"] for r in runs])
        out["presets"][preset] = {
            "batch_size": p["batch_size"], "block_size": shape["block_size"], "matmul_params": n,
            "flops_per_token": per_token, "tokens_per_s": common.median([r["tokens_per_s"] for r in runs]),
            "model_GFLOP_per_s": model_flops / 1e9, "matmul_GFLOP_per_s": common.summary([x / 1e9 for x in peaks]),
            "mfu": model_flops / peak,
        }
        print(f"{preset}: {model_flops / 1e9:.1f} model GFLOP/s over {peak / 1e9:.1f} matmul GFLOP/s "
              f"= {model_flops / peak:.1%}", flush=True)
    # what the presets' fused GELU gains over GPT-2's default `gelu_new` (same function, 8 kernels)
    preset, p = "tiny", plan["tiny"]
    path, tok = common.packed("mle", preset)
    fused, plain = [], []
    for _ in range(repeats):
        a, b = common.clean_repeat(lambda: (
            trainloop.timed_run("phf", path, tok, preset, config_overrides={
                "activation_function": "gelu_new"}, **p)["tokens_per_s"],
            trainloop.timed_run("phf", path, tok, preset, **p)["tokens_per_s"]))[0]
        plain.append(a)
        fused.append(b)
    out["tiny_gelu_new"] = {
        "tokens_per_s": {"gelu_new": common.median(plain), "gelu_pytorch_tanh": common.median(fused)},
        "fused_speedup": common.median(fused) / common.median(plain),
        "mfu_with_gelu_new": out["presets"]["tiny"]["mfu"] * common.median(plain) / common.median(fused)}
    print("tiny with GPT-2's unfused gelu_new:", out["tiny_gelu_new"], flush=True)
    out["met"] = all(v["mfu"] >= 0.5 for v in out["presets"].values())
    common.write_result("mfu", out)
    return out


if __name__ == "__main__":
    main()
