"""Tiny trained runs for the evaluation tests: a hand-scored slice of real code and
a 2-layer, 32-wide GPT-2 trained for a few steps through `phf.train.train`."""

from __future__ import annotations

import json
from pathlib import Path

from phf.config import load_config

TINY = ["model.config_overrides={n_layer: 2, n_embd: 32, n_head: 2}", "tokenizer.vocab_size=300",
        "training.block_size=64", "training.per_device_batch_size=4", "training.effective_batch_size=8",
        "training.num_tokens=3072", "training.logging_steps=2", "training.report_to=[]",
        "eval.num_samples=10", "eval.max_new_tokens=16", "eval.group_size=5", "eval.heldout_max_tokens=1000",
        "eval.callback_num_samples=4", "eval.callback_heldout_blocks=2", "eval.kl_num_samples=6",
        "data.heldout_fraction=0.2"]


def scored_corpus(path: Path, code_texts: list[str], num_docs: int = 24) -> Path:
    """Scored records of the first `num_docs` modules, each cut to 4000 characters."""
    from phf.scorers import get_scorer

    scorer = get_scorer("pep8")
    with open(path, "w") as f:
        for text in code_texts[:num_docs]:
            texts, scores = scorer.score_document(text[:4000])
            f.write(json.dumps({"texts": texts, "scores": scores}) + "\n")
    return path


def tiny_config(scored: Path, out: Path, objective: str = "mle", extra: list[str] = ()):
    return load_config(["tasks/pep8", f"objectives/{objective}", "models/tiny"],
                       [*TINY, f"data.scored_path={scored}", f"training.output_dir={out}", *extra])


def train_tiny(scored: Path, out: Path, objective: str = "mle", extra: list[str] = ()) -> Path:
    from phf.train import train

    return train(tiny_config(scored, out, objective, extra))
