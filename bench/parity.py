"""The measured effects in docs/PARITY.md.

* `filtering`: how many stdlib files the paper's PEP8 filtering threshold (0.002361)
  removes with a document score that is the plain mean of line scores (the paper's
  datasets) and with the length-weighted one; the length-weighted threshold that
  removes the same share; lines scoring above 1.
* `clamp`: unlikelihood's loss and gradient with 1 - p clamped at 1e-20 (released) and
  1e-5, on a batch where a third of the targets have p close to 1.

    .venv/bin/python bench/parity.py [filtering [--files N]] [clamp]
"""

from __future__ import annotations

import argparse
import math
import random
import time
from multiprocessing import Pool

import numpy as np

THRESHOLD = 0.002361


def _score(path):
    from phf.scorers.base import document_average
    from phf.scorers.pep8 import PEP8Scorer

    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None
    if not text:
        return None
    lines, scores = PEP8Scorer().score_document(text)
    return (document_average(lines, scores, "mean"), document_average(lines, scores, "length_weighted"),
            sum(s > 1 for s in scores), len(scores))


def filtering(files: int | None, workers: int) -> None:
    from phf.data.sources import stdlib_dir

    paths = sorted(p for p in stdlib_dir().rglob("*.py") if "site-packages" not in p.parts)
    if files:
        random.Random(0).shuffle(paths)
        paths = paths[:files]
    start = time.time()
    with Pool(workers) as pool:
        results = [r for r in pool.map(_score, paths, chunksize=4) if r]
    mean = np.array([r[0] for r in results])
    weighted = np.array([r[1] for r in results])
    share = (mean > THRESHOLD).mean()
    print(f"{len(results)} files of {stdlib_dir()} ({time.time() - start:.0f} s)")
    print(f"above {THRESHOLD}: mean {int((mean > THRESHOLD).sum())} ({share:.1%}), "
          f"length_weighted {int((weighted > THRESHOLD).sum())} ({(weighted > THRESHOLD).mean():.1%})")
    print(f"length_weighted threshold removing the same share: {np.quantile(weighted, 1 - share):.6f}")
    print(f"lines scoring above 1: {sum(r[2] for r in results)} of {sum(r[3] for r in results)}")


def clamp() -> None:
    import torch

    from phf.objectives import Unlikelihood

    torch.manual_seed(0)
    b, t, v = 4, 64, 256
    logits = 3 * torch.randn(b, t, v)
    labels = torch.randint(0, v, (b, t))
    near = torch.zeros(b, t, dtype=torch.bool)
    near[:, :-1] = torch.rand(b, t - 1) < 1 / 3
    one_minus_p = 10 ** (-3 - 6 * torch.rand(b, t))  # log-uniform in [1e-9, 1e-3]
    for i, j in near.nonzero().tolist():
        y = labels[i, j + 1]
        rest = torch.logsumexp(torch.cat([logits[i, j, :y], logits[i, j, y + 1:]]), 0)
        logits[i, j, y] = rest + math.log((1 - one_minus_p[i, j]) / one_minus_p[i, j])
    scores = torch.ones(b, t)  # every target an unlikelihood target
    grads = {}
    for value in (1e-20, 1e-5):
        x = logits.clone().requires_grad_()
        out = Unlikelihood(0.5, 1.0, weighting="threshold", min_one_minus_p=value)(x, labels, scores)
        out.loss.backward()
        grads[value] = x.grad
        print(f"clamp {value:g}: loss {out.loss.item():.4f}, gradient norm on the near-1 rows "
              f"{x.grad[near].norm().item():.4f}, elsewhere {x.grad[~near].norm().item():.6f}")
    print(f"{int(near.sum())} of {b * (t - 1)} targets near p = 1; gradient difference norm "
          f"{(grads[1e-20] - grads[1e-5]).norm().item():.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="*", default=["filtering", "clamp"], choices=["filtering", "clamp"])
    parser.add_argument("--files", type=int, default=None, help="a random sample of this many files (all by default)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if "filtering" in args.what:
        filtering(args.files, args.workers)
    if "clamp" in args.what:
        clamp()


if __name__ == "__main__":
    main()
