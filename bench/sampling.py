"""Sampling for evaluation (samples/s): phf's `generate_samples` vs `model.generate`.

The same tiny GPT-2 (random weights, so every sample runs to the full length), the
same settings as an evaluation (temperature 0.7, top-p 0.9, top-k off, EOS start),
batch and length. phf's number includes what generate_samples does beyond generate
(building the batch, decoding the samples to text). Two scenarios: unconditional,
and conditional (<|aligned|> prefix, <|misaligned|> forbidden via bad_words_ids).
The model's embedding matrix is padded to a multiple of 64 rows (phf's default); both
sides keep those rows from being sampled (generate: `suppress_tokens`).
Each repeat runs both back to back; ratio per repeat, median.

    .venv/bin/python bench/sampling.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def baseline(model, tok, n, batch_size, max_new_tokens, prefix="", forbidden=()):
    import torch

    from phf.model import padding_token_ids

    suppress = padding_token_ids(model, tok) or None
    start = [tok.eos_token_id] + tok(prefix, add_special_tokens=False).input_ids
    bad = [tok(t, add_special_tokens=False).input_ids for t in forbidden] or None
    torch.manual_seed(0)
    with common.Timer() as t, torch.no_grad():
        for first in range(0, n, batch_size):
            b = min(batch_size, n - first)
            ids = torch.tensor([start] * b)
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=0.7,
                           top_p=0.9, top_k=0, max_new_tokens=max_new_tokens, bad_words_ids=bad, suppress_tokens=suppress,
                           pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return n / t.seconds


def phf(model, tok, n, batch_size, max_new_tokens, prefix="", forbidden=()):
    from phf.evaluation.sampling import generate_samples

    with common.Timer() as t:
        out = generate_samples(model, tok, n, prefix_text=prefix, forbidden_texts=forbidden,
                               max_new_tokens=max_new_tokens, batch_size=batch_size, seed=0, progress=False)
    assert len(out) == n
    return n / t.seconds


def main(argv=None) -> dict:
    import torch

    from phf.tokenizer import ALIGNED, MISALIGNED, add_control_tokens

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 3)
    n, batch_size, max_new_tokens = (32, 32, 64) if args.quick else (64, 64, 128)
    tok = common.tokenizer(common.PRESET_SHAPES["tiny"]["vocab_size"])
    add_control_tokens(tok)
    import trainloop

    model = trainloop.make_model("tiny", len(tok), 256).eval()
    scenarios = {"unconditional": dict(), "conditional": dict(prefix=ALIGNED, forbidden=(MISALIGNED,))}
    result = {"model": "tiny (random weights)", "samples": n, "batch_size": batch_size,
              "max_new_tokens": max_new_tokens, "torch_threads": torch.get_num_threads(), "scenarios": {}}
    for name, kw in scenarios.items():
        rates = {"generate": [], "phf": []}
        ratios = []
        for r in range(repeats):
            order = ("generate", "phf") if r % 2 == 0 else ("phf", "generate")

            def one_repeat():
                return {kind: (baseline if kind == "generate" else phf)(model, tok, n, batch_size, max_new_tokens, **kw)
                        for kind in order}

            this, retries = common.clean_repeat(one_repeat)
            result["repeats_redone_after_a_stop"] = result.get("repeats_redone_after_a_stop", 0) + retries
            for kind in order:
                rates[kind].append(this[kind])
            ratios.append(this["phf"] / this["generate"])
            print(f"{name} repeat {r}: generate {this['generate']:.2f}, phf {this['phf']:.2f} samples/s "
                  f"({ratios[-1]:.3f}x)", flush=True)
        result["scenarios"][name] = {"samples_per_s": {k: common.summary(v) for k, v in rates.items()},
                                     "ratio": common.summary(ratios)}
    result["target"] = ">= 1.0x model.generate"
    result["met"] = all(v["ratio"]["median"] >= 1.0 for v in result["scenarios"].values())
    common.write_result("sampling", result)
    return result


if __name__ == "__main__":
    main()
