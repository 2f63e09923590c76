"""Capability as KL(reference || model), estimated on samples from the reference LM.

    KL(p_ref || p_model) ~= mean over x ~ p_ref of  log p_ref(x) - log p_model(x)

as in the paper (which used GPT-3 as the reference). Any two causal LMs work, each
with its own tokenizer: both score the same *string*, each tokenizing it its own way
and starting from its own start token (EOS, as `generate_samples` does). With
different tokenizers, log p(string) is taken as the log-probability of the
tokenizer's own (canonical) tokenization, the usual approximation.

Samples are prefixes of at most `max_new_tokens` reference tokens, scored without an
end-of-text token; draw them at temperature 1 and top-p 1 (the defaults), otherwise
they do not come from p_ref and the estimate is not a KL.

Reference samples and their reference log-probabilities are cached on disk, keyed by
the reference weights and the sampling settings, so evaluating many runs against one
reference samples (and runs the reference) once.

A conditional-training model is scored as it is used: after `<|aligned|>` (or its
conditioning form's best prefix, `<|q0|>` or `<0>`), and with
the control tokens removed from its vocabulary (probabilities renormalised over the
rest), since the reference text never contains them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Sequence

import torch

from phf.evaluation.logprobs import continuation_logprobs
from phf.evaluation.sampling import generate_samples
from phf.evaluation.scenarios import conditioning
from phf.model import load_model
from phf.tokenizer import ALIGNED, control_token_ids, load_tokenizer

#: bump when the cache format or the sampling procedure changes
_CACHE_VERSION = 1


def _start_id(tokenizer) -> int:
    start = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.bos_token_id
    if start is None:
        raise ValueError("tokenizer has neither an EOS nor a BOS token to start a text from")
    return start


def _max_positions(model) -> int | None:
    cfg = model.config
    return getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)


@torch.no_grad()
def sequence_logprobs(model, tokenizer, texts: Sequence[str], *, prefix_text: str = "",
                      exclude_token_ids: Sequence[int] = (), batch_size: int = 16) -> list[float]:
    """Total log-probability (nats, float32) of each text under `model`.

    Each text is tokenized without special tokens and scored after the start token
    and `prefix_text` (both context only, not scored). `exclude_token_ids` are removed
    from the next-token distribution before normalising. Batched with right padding
    and an attention mask; texts are sorted by length so batches pad little.
    """
    was_training = model.training
    model.eval()
    context = [_start_id(tokenizer)] + tokenizer(prefix_text, add_special_tokens=False).input_ids
    texts_ids = [tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    limit = _max_positions(model)
    longest = max((len(context) + len(e) for e in texts_ids), default=0)
    if limit is not None and longest > limit:
        raise ValueError(f"a text is {longest} tokens long with its context, more than the model's "
                         f"{limit} positions; sample fewer max_new_tokens")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else context[0]
    try:
        return continuation_logprobs(model, [context] * len(texts_ids), texts_ids, exclude_token_ids,
                                     batch_size=batch_size, pad_id=pad_id)
    finally:
        model.train(was_training)


_MODEL_FILES = {"config.json", "generation_config.json", "vocab.json", "merges.txt"}


def _weights_fingerprint(path: str) -> list:
    """Name, size and mtime of each weight, config and tokenizer file: changes
    whenever the model does, but not when a run's results.json or metrics change."""
    p = Path(path)
    if not p.is_dir():
        return [path]  # a hub name: the name is all we know
    files = sorted(f for f in p.iterdir() if f.is_file() and (
        f.suffix in {".safetensors", ".bin"} or f.name in _MODEL_FILES or f.name.startswith("tokenizer")))
    return [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]


def _default_cache_dir(reference_dir: str) -> Path:
    if Path(reference_dir).is_dir() and os.access(reference_dir, os.W_OK):
        return Path(reference_dir) / ".phf_kl_samples"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "phf" / "kl_samples"


def _load_model_and_tokenizer(path: str, device):
    return load_model(path).to(device), load_tokenizer(path)


def reference_samples(reference_dir: str, num_samples: int, *, max_new_tokens: int = 128,
                      temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
                      batch_size: int = 16, cache_dir: str | Path | None = None,
                      device: str | None = None) -> tuple[list[dict], Path, bool]:
    """Samples from the reference with their reference log-probabilities, from the
    cache when there (returns rows {"text", "ref_logprob"}, the cache file, and
    whether it was a cache hit)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    key = {
        "version": _CACHE_VERSION,
        "reference": str(Path(reference_dir).resolve()) if Path(reference_dir).is_dir() else reference_dir,
        "weights": _weights_fingerprint(reference_dir),
        "num_samples": num_samples, "max_new_tokens": max_new_tokens,
        "temperature": temperature, "top_p": top_p, "seed": seed,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache_dir(reference_dir)
    path = cache_dir / f"{digest}.jsonl"
    if path.exists():
        rows = [json.loads(line) for line in path.read_text().splitlines() if line]
        if len(rows) == num_samples:
            return rows, path, True

    model, tokenizer = _load_model_and_tokenizer(reference_dir, device)
    texts = generate_samples(model, tokenizer, num_samples, max_new_tokens=max_new_tokens,
                             temperature=temperature, top_p=top_p, batch_size=batch_size,
                             seed=seed, progress=False)
    logprobs = sequence_logprobs(model, tokenizer, texts, batch_size=batch_size)
    rows = [{"text": t, "ref_logprob": lp} for t, lp in zip(texts, logprobs)]
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    path.with_suffix(".key.json").write_text(json.dumps(key, indent=2))
    return rows, path, False


def _conditioning(tokenizer, conditional: bool | None, model_dir: str | None = None) -> tuple[str, list[int]]:
    """The prefix the model is scored after (its conditioning form's best: <|aligned|>,
    <|q0|> or "<0>"; `scenarios.conditioning`) and the control token ids left out."""
    ids = control_token_ids(tokenizer)
    prefix = conditioning(tokenizer, model_dir)["prefix_text"]
    if conditional is None:
        conditional = bool(prefix)
    if not conditional:
        return "", []
    if not prefix:
        raise ValueError(f"conditional=True but the tokenizer has no {ALIGNED} token")
    return prefix, list(ids.values())


def kl_to_reference(reference_dir: str, model_dir: str, num_samples: int = 1024, *,
                    max_new_tokens: int = 128, temperature: float = 1.0, top_p: float = 1.0,
                    seed: int = 0, batch_size: int = 16, cache_dir: str | Path | None = None,
                    conditional: bool | None = None, device: str | None = None) -> dict:
    """Estimate KL(reference || model) in nats per text and per character.

    `conditional`: score the model after <|aligned|> with control tokens masked;
    None decides from whether its tokenizer has control tokens. Returns
    {"kl", "kl_stderr", "kl_per_char", "ref_logprob", "model_logprob", "num_samples",
    "mean_chars", "samples_path", "cached"}.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    rows, path, cached = reference_samples(
        reference_dir, num_samples, max_new_tokens=max_new_tokens, temperature=temperature,
        top_p=top_p, seed=seed, batch_size=batch_size, cache_dir=cache_dir, device=device)
    texts = [r["text"] for r in rows]
    model, tokenizer = _load_model_and_tokenizer(model_dir, device)
    prefix, exclude = _conditioning(tokenizer, conditional, model_dir)
    model_lp = sequence_logprobs(model, tokenizer, texts, prefix_text=prefix,
                                 exclude_token_ids=exclude, batch_size=batch_size)
    diffs = [r["ref_logprob"] - m for r, m in zip(rows, model_lp)]
    n = len(diffs)
    kl = sum(diffs) / n
    var = sum((d - kl) ** 2 for d in diffs) / (n - 1) if n > 1 else 0.0
    chars = sum(len(t) for t in texts)
    return {
        "kl": kl,
        "kl_stderr": math.sqrt(var / n),
        "kl_per_char": sum(diffs) / chars if chars else 0.0,
        "ref_logprob": sum(r["ref_logprob"] for r in rows) / n,
        "model_logprob": sum(model_lp) / n,
        "num_samples": n,
        "mean_chars": chars / n,
        "samples_path": str(path),
        "cached": cached,
    }


def samples_nll_under(reference_dir: str, texts: Sequence[str], batch_size: int = 16,
                      device: str | None = None) -> dict:
    """How the reference LM (the MLE run, in a sweep) rates another model's samples: the mean
    over samples of each sample's NLL per token under the reference, with a 95% normal
    interval. Unlike KL it needs no likelihood of the sampling procedure, so it compares
    every decoding mode (rerank and tag-aware included) on one scale: lower is text the
    reference finds more ordinary. Empty samples are left out."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = _load_model_and_tokenizer(reference_dir, device)
    kept = [t for t in texts if t]
    lengths = [len(tokenizer(t, add_special_tokens=False).input_ids) for t in kept]
    limit = _max_positions(model)
    if limit is not None:  # a reference with fewer positions than the sampled model: score each text's start
        kept = [tokenizer.decode(tokenizer(t, add_special_tokens=False).input_ids[:limit - 1]) if n >= limit else t
                for t, n in zip(kept, lengths)]
        lengths = [min(n, limit - 1) for n in lengths]
    if not kept:
        return {"nll": None, "ci": None, "num_samples": 0, "reference": str(reference_dir)}
    lp = sequence_logprobs(model, tokenizer, kept, batch_size=batch_size)
    per = [-x / n for x, n in zip(lp, lengths)]
    mean_nll = sum(per) / len(per)
    sd = math.sqrt(sum((x - mean_nll) ** 2 for x in per) / (len(per) - 1)) if len(per) > 1 else 0.0
    half = 1.96 * sd / math.sqrt(len(per))
    return {"nll": mean_nll, "ci": [mean_nll - half, mean_nll + half], "num_samples": len(per),
            "reference": str(reference_dir)}
