"""The hf-classifier scorer on CPU: documents per second at batch 1 vs batch 32.

The classifier is a GPT-2 of the `tiny` preset's shape (4 layers, 192 wide, 2 classes,
randomly initialised: the speed does not depend on the weights) with a 4,096-token BPE
trained on the documents; the documents are real English prose, the docstrings of the
standard library's modules (96 of them, 40-600 characters), scored sentence by
sentence as `phf score` does (`score_documents`). Both batch sizes run in this process
on one torch thread, interleaved, repeated after one untimed pass each; the ratio batch
32 / batch 1 is taken per repeat and reported as the median. The scores of the two are
checked to agree (the largest difference is reported).

    .venv/bin/python bench/hf_classifier.py [--quick] [--docs 96] [--repeats 3]
"""

from __future__ import annotations

import argparse
import ast
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def docstrings(n: int) -> list[str]:
    """The first `n` module docstrings of the stdlib of 40 to 600 characters."""
    out = []
    for text in common.stdlib_texts(4_000_000):
        try:
            doc = ast.get_docstring(ast.parse(text))
        except (SyntaxError, ValueError):
            continue
        if doc and 40 <= len(doc) <= 600:
            out.append(doc)
            if len(out) == n:
                break
    return out


def save_classifier(folder: Path, texts: list[str]) -> None:
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from phf.tokenizer import train_tokenizer

    tok = train_tokenizer(texts, vocab_size=4096)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tok), n_positions=256, n_layer=4, n_head=4, n_embd=192, num_labels=2,
                        id2label={0: "fine", 1: "bad"}, label2id={"fine": 0, "bad": 1},
                        pad_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    GPT2ForSequenceClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--docs", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args(argv)
    n_docs = args.docs or (32 if args.quick else 96)
    repeats = args.repeats or (1 if args.quick else 3)

    import torch

    from phf.scorers import get_scorer

    # one thread: on a shared 2-core machine two threads per matmul swing with the load
    torch.set_num_threads(1)
    texts = docstrings(n_docs)
    with tempfile.TemporaryDirectory() as tmp:
        save_classifier(Path(tmp), texts)
        scorers = {b: get_scorer("hf-classifier", model=tmp, label="bad", batch_size=b, max_length=256,
                                 device="cpu") for b in (1, 32)}
    segments = sum(len(scorers[1].segment(t)) for t in texts)
    for scorer in scorers.values():  # warm-up: the first pass at each input shape is slower (allocations)
        scorer.score_documents(texts)
    rates = {1: [], 32: []}
    ratios, retries, scores = [], 0, {}
    for r in range(repeats):
        order = (1, 32) if r % 2 == 0 else (32, 1)

        def one_repeat():
            out = {}
            for b in order:
                t0 = time.perf_counter()
                scores[b] = [x for _, doc in scorers[b].score_documents(texts) for x in doc]
                out[b] = len(texts) / (time.perf_counter() - t0)
            return out

        this, n = common.clean_repeat(one_repeat)
        retries += n
        for b in order:
            rates[b].append(this[b])
        ratios.append(this[32] / this[1])
        print(f"repeat {r}: batch 1 {this[1]:.1f} docs/s, batch 32 {this[32]:.1f} docs/s, "
              f"ratio {ratios[-1]:.2f}", flush=True)
    diff = max(abs(a - b) for a, b in zip(scores[1], scores[32]))
    result = {"documents": len(texts), "segments": segments, "characters": sum(map(len, texts)),
              "model": "GPT2ForSequenceClassification, 4 layers x 192, 4,096-token BPE (tiny preset's shape)",
              "torch_threads": torch.get_num_threads(),
              "docs_per_s": {b: common.summary(v) for b, v in rates.items()},
              "batch32_over_batch1": common.summary(ratios), "max_score_difference": diff,
              "repeats_redone_after_a_stop": retries}
    common.write_result("hf_classifier", result)
    return result


if __name__ == "__main__":
    main()
