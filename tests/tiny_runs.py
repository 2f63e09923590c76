"""Tiny models and runs for the tests: random 2-layer, 32-wide GPT-2s with their own
BPE, and a hand-scored slice of real code trained for a few steps through
`phf.train.train`."""

from __future__ import annotations

import json
from pathlib import Path

from phf.config import load_config

#: the settings of every tiny test run: a 2-layer, 32-wide GPT-2 with a 300-token BPE,
#: a few steps of 8 x 64 tokens, and a handful of short samples
TINY_SETTINGS = {
    "model.config_overrides": "{n_layer: 2, n_embd: 32, n_head: 2}", "tokenizer.vocab_size": 300,
    "training.block_size": 64, "training.per_device_batch_size": 4, "training.effective_batch_size": 8,
    "training.num_tokens": 3072, "training.logging_steps": 2, "training.report_to": "[]",
    "eval.num_samples": 10, "eval.max_new_tokens": 16, "eval.group_size": 5, "eval.heldout_max_tokens": 1000,
    "eval.callback_num_samples": 4, "eval.callback_heldout_blocks": 2, "eval.kl_num_samples": 6,
    "data.heldout_fraction": 0.2,
}


def tiny(changes: dict | None = None) -> list[str]:
    """The tiny settings as overrides, with `changes` ({dotted key: value}) on top."""
    return [f"{k}={v}" for k, v in {**TINY_SETTINGS, **(changes or {})}.items()]


TINY = tiny()

#: a tiny sweep's run on top of the tiny settings: one layer, 512 tokens, six 8-token samples
TINY_SWEEP_SETTINGS = {
    "model.config_overrides": "{n_layer: 1, n_embd: 32, n_head: 2}", "training.block_size": 32,
    "training.effective_batch_size": 4, "training.num_tokens": 512, "eval.num_samples": 6,
    "eval.max_new_tokens": 8, "eval.group_size": 3, "eval.heldout_max_tokens": 500,
}


def tiny_sweep(changes: dict | None = None) -> list[str]:
    """The overrides of a tiny sweep, with `changes` on top."""
    return tiny({**TINY_SWEEP_SETTINGS, **(changes or {})})


def tiny_lm(tokenizer, seed: int = 0, n_positions: int = 128, n_layer: int = 2):
    """A random GPT-2, 32 wide, for `tokenizer` (its EOS as BOS), in eval mode."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_layer=n_layer, n_head=2, n_embd=32,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    return GPT2LMHeadModel(config).eval()


def tiny_tokenizer(corpus: list[str], vocab_size: int = 300, control_tokens: bool = False):
    """A byte-level BPE trained on `corpus`, with <|aligned|>/<|misaligned|> if asked."""
    from phf.tokenizer import add_control_tokens, train_tokenizer

    tok = train_tokenizer(corpus, vocab_size=vocab_size)
    if control_tokens:
        add_control_tokens(tok)
    return tok


def save_tiny_lm(path: Path, corpus: list[str], vocab_size: int = 300, seed: int = 0, n_positions: int = 128,
                 control_tokens: bool = False) -> str:
    """`tiny_lm` with its tokenizer, saved like a phf run; returns the path."""
    tok = tiny_tokenizer(corpus, vocab_size, control_tokens)
    tiny_lm(tok, seed, n_positions).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


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
