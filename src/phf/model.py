"""Models: any HF causal LM, from scratch (a size preset) or from a checkpoint.

Presets are GPT-2 configs (`tiny` and `small` fit a CPU; `gpt2-small` is the paper's
124M model) and Llama-style ones through transformers' Llama classes (`llama-tiny`,
`llama-small`: rotary positions, RMSNorm, a SwiGLU MLP, no biases), each as wide and
as deep as the GPT-2 preset of its size. When control tokens are added to a tokenizer,
the embedding matrix grows and the new rows start at the mean of the old ones plus
small noise (as in the paper), so the new tokens begin as an "average" token.
"""

from __future__ import annotations

from pathlib import Path

import json

import torch
from transformers import AutoConfig, AutoModelForCausalLM, GPT2Config, LlamaConfig, PreTrainedModel

from phf.errors import DataError
from phf.model_config import ModelConfig
from phf.paths import looks_local
from phf.runfiles import json_object

PRESETS: dict[str, dict] = {
    # 1.78M non-embedding parameters (2.62M with a 4,096 vocabulary): the demo's model,
    # trains in minutes on 2 cores
    "tiny": dict(n_layer=4, n_head=4, n_embd=192),
    # ~10M non-embedding parameters
    "small": dict(n_layer=6, n_head=8, n_embd=384),
    # GPT-2 small, the paper's model (124M with a 50k vocabulary)
    "gpt2-small": dict(n_layer=12, n_head=12, n_embd=768),
    # Llama-style, the width and depth of `tiny`, SwiGLU at 8/3 of the width: 2.56M parameters
    # with a 4,096 vocabulary (tiny: 2.62M, 49k of them its learned positions), 1.77M
    # non-embedding (tiny: 1.78M), so the two compare at equal parameters
    "llama-tiny": dict(num_hidden_layers=4, num_attention_heads=4, hidden_size=192, intermediate_size=512),
    # the width and depth of `small`: 16.9M parameters with a 16,384 vocabulary (small: 17.1M),
    # 10.6M non-embedding
    "llama-small": dict(num_hidden_layers=6, num_attention_heads=8, hidden_size=384, intermediate_size=1024),
}

#: what every preset shares (model.config_overrides can change any of it)
PRESET_DEFAULTS: dict = dict(
    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    # GPT-2's tanh GELU in one fused kernel; its default `gelu_new` computes the same
    # function in 8 elementwise kernels (1.45x faster gpt2-small training on an H100)
    activation_function="gelu_pytorch_tanh",
)

#: what every Llama-style preset shares: no biases, no dropout, and tied input/output
#: embeddings as GPT-2 has (small models spend much of their parameters on the vocabulary)
LLAMA_DEFAULTS: dict = dict(
    attention_bias=False, mlp_bias=False, attention_dropout=0.0, hidden_act="silu", rms_norm_eps=1e-5,
    tie_word_embeddings=True,
)

#: weight files that are Python pickles (loading one can run code)
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")

#: standard deviation of the noise added to new embedding rows
NEW_EMBEDDING_NOISE = 0.01


def padded_vocab_size(vocab_size: int, multiple: int) -> int:
    """`vocab_size` rounded up to a multiple of `multiple`."""
    return -(-vocab_size // multiple) * multiple


def build_model(cfg: ModelConfig, vocab_size: int, block_size: int) -> PreTrainedModel:
    """A new model from a preset, or the checkpoint at `cfg.path`.

    A new model gets `vocab_size` (the tokenizer's length) rounded up to
    `cfg.pad_vocab_to_multiple_of` embedding rows.
    """
    if cfg.path:
        return load_model(cfg.path, cfg.attn_implementation, cfg.trust_remote_code, allow_pickle=cfg.allow_pickle)
    if cfg.preset not in PRESETS:
        raise ValueError(f"model.preset {cfg.preset!r} is not one of {', '.join(PRESETS)}")
    config = preset_config(cfg.preset, padded_vocab_size(vocab_size, cfg.pad_vocab_to_multiple_of), block_size,
                           cfg.config_overrides)
    return AutoModelForCausalLM.from_config(config, attn_implementation=cfg.attn_implementation)


def preset_config(preset: str, vocab_size: int, block_size: int, overrides: dict | None = None):
    """The transformers config of `preset` (id 0, the tokenizer's <|endoftext|>, as BOS,
    EOS and padding), with `overrides` (any field of that config class) on top."""
    fields = {**PRESETS[preset], **(overrides or {})}
    special = dict(bos_token_id=0, eos_token_id=0, pad_token_id=0)
    if preset.startswith("llama-"):
        return LlamaConfig(vocab_size=vocab_size, max_position_embeddings=block_size, **special,
                           **{**LLAMA_DEFAULTS, **fields})
    return GPT2Config(vocab_size=vocab_size, n_positions=block_size, **special, **{**PRESET_DEFAULTS, **fields})


def load_model(path: str, attn_implementation: str = "sdpa", trust_remote_code: bool = False,
               dtype: torch.dtype = torch.float32, allow_pickle: bool = False) -> PreTrainedModel:
    """A causal LM from a local directory (or a hub name where the network allows).

    Weights load from safetensors only: a checkpoint with nothing but pickled weights
    (`pytorch_model.bin`) is refused, because unpickling can run code, unless
    `allow_pickle` (then transformers reads it with `torch.load(weights_only=True)`).
    """
    local = Path(path).expanduser()
    if not local.exists() and looks_local(path):
        raise FileNotFoundError(f"{path}: model directory not found")
    if local.is_dir():
        check_model_files(local)
    if local.is_dir() and not allow_pickle and not any(local.glob("*.safetensors")):
        pickled = sorted(p.name for pattern in PICKLE_PATTERNS for p in local.glob(pattern))
        if pickled:
            raise ValueError(
                f"{path}: only pickled weights ({', '.join(pickled)}), no safetensors; phf does not unpickle "
                "files by default because that can run code. Convert the checkpoint (load it once where you "
                "trust it and save_pretrained); to train from it, you may instead set model.allow_pickle=true if you "
                "trust its source (phf eval and phf redteam load safetensors only)")
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    return AutoModelForCausalLM.from_pretrained(
        path, config=config, attn_implementation=attn_implementation, dtype=dtype,
        trust_remote_code=trust_remote_code, use_safetensors=None if allow_pickle else True)


def _restore_hint(folder: Path) -> str:
    if (folder / "checkpoints").is_dir():  # a phf run: its checkpoints hold copies of the model files
        return (f"copy the file back from the newest complete checkpoint in {folder / 'checkpoints'} (the one with "
                f"phf_checkpoint_complete.json), or train the run again (`phf train {folder / 'config.yaml'} "
                "--overwrite`)")
    return "save or download the model again"


def safetensors_problem(path: Path) -> str | None:
    """Why `path` is not a whole safetensors file (cut short, or another format), or None.

    The format is an 8-byte header length, a JSON header giving each tensor's byte range,
    then the bytes: the last range must end at the end of the file."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n < 0 or n > size - 8:
            return f"cut short or not a safetensors file ({size} bytes, too few for its header)"
        try:
            header = json.loads(f.read(n))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        except (ValueError, UnicodeDecodeError, TypeError, KeyError, IndexError, AttributeError):
            return "not a safetensors file (its header is not a tensor table)"
    if 8 + n + end != size:
        return f"cut short: its tensors need {8 + n + end} bytes, the file has {size}"
    return None


def check_model_files(folder: Path) -> None:
    """Raise a one-line DataError when the model folder's config.json or weights are
    missing, damaged (cut short) or foreign, naming the file and how to restore it."""
    hint = _restore_hint(folder)
    config, index = folder / "config.json", folder / "model.safetensors.index.json"
    if not config.is_file():
        raise DataError(f"{config}: not found (a model folder needs its config.json); {hint}", "damaged model")
    json_object(config, hint, "a model config")
    shards = []
    if index.is_file():
        weight_map = json_object(index, hint, "a weight index").get("weight_map")
        shards = sorted(set(weight_map.values())) if isinstance(weight_map, dict) else []
    weights = [folder / s for s in shards] or sorted(folder.glob("*.safetensors"))
    if not weights and not any(folder.glob(p) for p in PICKLE_PATTERNS):
        raise DataError(f"{folder}: no model weights (model.safetensors); {hint}", "damaged model")
    for w in weights:
        why = "not found (listed in model.safetensors.index.json)" if not w.is_file() else safetensors_problem(w)
        if why:
            raise DataError(f"{w}: {why}; {hint}", "damaged model")


def resize_for_new_tokens(model: PreTrainedModel, new_vocab_size: int, seed: int = 0,
                          old_vocab_size: int | None = None, pad_to_multiple_of: int = 1) -> int:
    """Make room for tokens `old_vocab_size .. new_vocab_size - 1`; their rows = mean of
    the rows before them + noise.

    `old_vocab_size` is the tokenizer's length before the tokens were added (default:
    the rows the model has). The matrix grows, rounded up to `pad_to_multiple_of`,
    only when the new tokens don't fit in its padding rows. Returns the number of
    rows initialised. With tied input/output embeddings (GPT-2) one matrix is
    updated; untied output embeddings get the same treatment.
    """
    rows = model.get_input_embeddings().weight.shape[0]
    old = rows if old_vocab_size is None else old_vocab_size
    if new_vocab_size <= old:
        return 0
    if new_vocab_size > rows:
        model.resize_token_embeddings(padded_vocab_size(new_vocab_size, pad_to_multiple_of), mean_resizing=False)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for emb in {id(m): m for m in (model.get_input_embeddings(), model.get_output_embeddings())
                    if m is not None}.values():
            w = emb.weight
            mean = w[:old].mean(dim=0)
            noise = torch.randn(new_vocab_size - old, w.shape[1], generator=gen) * NEW_EMBEDDING_NOISE
            w[old:new_vocab_size] = (mean + noise).to(w.dtype)
    return new_vocab_size - old


#: names of embedding parameters: GPT-2's token and position tables, Llama's token table
EMBEDDINGS = ("wte", "wpe", "embed_tokens")


def count_parameters(model: torch.nn.Module, non_embedding: bool = False) -> int:
    n = sum(p.numel() for p in model.parameters())
    if non_embedding:
        n -= sum(p.numel() for name, p in model.named_parameters() if any(e in name for e in EMBEDDINGS))
    return n


def padding_token_ids(model: PreTrainedModel, tokenizer) -> list[int]:
    """The ids of the model's padding rows (beyond the tokenizer): never to be sampled."""
    out = model.get_output_embeddings()
    rows = out.weight.shape[0] if out is not None else model.config.get_text_config().vocab_size
    return list(range(len(tokenizer), rows))
