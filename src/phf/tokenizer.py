"""Tokenizers: train a byte-level BPE on the corpus, or load any HF tokenizer;
add the conditional-training control tokens.

A trained tokenizer is saved as a `PreTrainedTokenizerFast`, so it reloads with
`AutoTokenizer.from_pretrained` like any other. `<|endoftext|>` separates documents
and starts unconditional generation, as in GPT-2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable, Iterator

from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from phf.errors import DataError
from phf.runfiles import json_object

EOS = "<|endoftext|>"
ALIGNED = "<|aligned|>"
MISALIGNED = "<|misaligned|>"
CONTROL_TOKENS = (ALIGNED, MISALIGNED)
#: token-level masking's placeholder for a hidden segment (objective mask, hide: true)
HIDDEN = "<|hidden|>"


def quantile_tokens(k: int) -> list[str]:
    """The K control tokens of conditioning: quantiles, best bucket first: <|q0|>..<|qK-1|>."""
    return [f"<|q{i}|>" for i in range(k)]


def train_tokenizer(texts: Iterable[str], vocab_size: int, max_bytes: int | None = None) -> PreTrainedTokenizerFast:
    """A GPT-2-style byte-level BPE trained on `texts` (up to `max_bytes` characters)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        # the Rust progress display writes blank lines when stderr is not a terminal (a log file)
        vocab_size=vocab_size, special_tokens=[EOS], show_progress=sys.stderr.isatty(),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_capped(texts, max_bytes), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, unk_token=EOS,
                                   pad_token=EOS, model_max_length=1 << 30)


def _capped(texts: Iterable[str], max_bytes: int | None) -> Iterator[str]:
    total = 0
    for t in texts:
        if max_bytes is not None and total >= max_bytes:
            return
        total += len(t)
        yield t


#: files of which a tokenizer folder holds at least one (fast, BPE, SentencePiece, WordPiece)
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "spiece.model", "vocab.txt")


def load_tokenizer(path: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The tokenizer in the folder `path` (or a hub name).

    A local folder with no tokenizer file is refused (transformers would otherwise
    build one from the model's config alone, which knows one token), and a damaged
    `tokenizer.json` is named in the error.
    """
    check_tokenizer_files(path)
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.eos_token is None:
        raise ValueError(f"tokenizer at {path} has no EOS token; phf needs one to separate documents")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def check_tokenizer_files(path: str) -> None:
    """Raise a one-line error when the local folder `path` holds no readable tokenizer."""
    local = Path(path).expanduser()
    if not local.is_dir():
        return  # a hub name, or a missing path that the caller reports
    if not any((local / f).is_file() for f in TOKENIZER_FILES):
        raise DataError(
            f"{local}: no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}, ...); they were removed or never "
            "written. For a phf run, copy them back from its data/tokenizer folder, or train the run again")
    # transformers reads config.json too (for the model type) when it sits beside them
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        if (local / name).is_file():
            json_object(local / name, "restore the file (a phf run keeps a copy of its tokenizer in data/tokenizer, "
                        "and of config.json in its checkpoints) or train the run again", "a Hugging Face file")


def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash of the tokenizer's vocabulary, merges and added tokens."""
    import hashlib

    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()[:16]


def attribute_tokens(attribute: str) -> tuple[str, str]:
    """The control tokens of one attribute when several are trained at once:
    ("<|toxicity:aligned|>", "<|toxicity:misaligned|>")."""
    return f"<|{attribute}:aligned|>", f"<|{attribute}:misaligned|>"


def add_control_tokens(tok: PreTrainedTokenizerBase, attributes: list[str] | None = None) -> int:
    """Add the control tokens as special tokens; returns how many were new.

    One attribute: <|aligned|>/<|misaligned|>. Several: a pair per attribute
    (`attribute_tokens`), so generation can ask for any combination of them.
    """
    tokens = list(CONTROL_TOKENS) if not attributes else [t for a in attributes for t in attribute_tokens(a)]
    return tok.add_tokens(tokens, special_tokens=True)


def control_token_ids(tok: PreTrainedTokenizerBase) -> dict[str, int]:
    """{token: id} for the control tokens the tokenizer has, per-attribute, quantile and
    placeholder ones included."""
    return {t: i for t, i in tok.get_vocab().items()
            if t in CONTROL_TOKENS or t == HIDDEN or _is_quantile_token(t)
            or (t.startswith("<|") and t.endswith("aligned|>") and ":" in t)}


def _is_quantile_token(t: str) -> bool:
    return t.startswith("<|q") and t.endswith("|>") and t[3:-2].isdigit()


def save_tokenizer(tok: PreTrainedTokenizerBase, path: str | Path) -> None:
    Path(path).mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(path))
