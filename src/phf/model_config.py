"""The model and tokenizer settings: a size preset or a checkpoint, and how to load it."""

from __future__ import annotations

from pydantic import Field

from phf.config_base import Section


class ModelConfig(Section):
    preset: str = "tiny"
    """A size preset, used when `path` is empty: GPT-2 tiny, small, gpt2-small, or Llama-style
    llama-tiny, llama-small (see phf.model.PRESETS)."""
    path: str | None = None
    """Start from this checkpoint (a phf run or any HF causal LM on disk, or a hub name)."""
    config_overrides: dict = Field(default_factory=dict)
    """Any field of the preset's Hugging Face config class, e.g. {n_layer: 6} (GPT2Config) or
    {num_hidden_layers: 6} (LlamaConfig)."""
    attn_implementation: str = "sdpa"
    """The attention kernel (sdpa, eager, flash_attention_2)."""
    trust_remote_code: bool = False
    """Run Python code shipped with a hub model (off: only transformers' own classes)."""
    allow_pickle: bool = False
    """Load pickled weights (pytorch_model.bin) when a checkpoint has no safetensors; off by
    default because unpickling a file can run code."""
    pad_vocab_to_multiple_of: int = Field(64, ge=1)
    """Round the embedding matrix up to a multiple of this many rows: matmul kernels run
    faster on aligned shapes (gpt2-small on an H100: 1.11x, bench/NOTES.md); the extra
    rows are never a target and never sampled. 1: exactly the tokenizer."""


class TokenizerConfig(Section):
    path: str | None = None
    """Load this tokenizer (local path or hub name); null trains a byte-level BPE."""
    vocab_size: int = Field(8192, gt=256)
    """Vocabulary of a newly trained BPE (> 256: the byte alphabet plus special tokens)."""
    train_max_bytes: int = Field(20_000_000, gt=0)
    """Train the tokenizer on at most this many bytes of the corpus."""
