"""`phf.generate`: samples from a model as `phf eval` draws them, from Python.

    import phf
    texts = phf.generate("runs/pep8/conditional", prompts=["def add(a, b):\n"], decoding="guidance:2")

A conditional-training run generates after its aligned tags and never emits a
misaligned one; `decoding` picks a decoding mode (see `eval.decoding`). The samples
come from phf's own sampler, the same code as `phf eval`, so they follow the same
distribution for the same settings and seed.
"""

from __future__ import annotations

from typing import Callable, Sequence

from phf.evaluation.config import DecodingConfig, parse_decoding
from phf.evaluation.conditioning import conditioning_controls
from phf.evaluation.sampling import generate_samples
from phf.evaluation.scenarios import conditioning
from phf.scorers.segment import get_segmenter


def generate(model, tokenizer=None, prompts: Sequence[str] | None = None, *, num_samples: int | None = None,
             decoding: DecodingConfig | str | dict | None = None, segmenter: str | Callable = "lines",
             scorer=None, enforce: Sequence[str] | None = None, max_new_tokens: int = 128,
             temperature: float = 0.7, top_p: float = 0.9, batch_size: int = 64, seed: int = 0,
             progress: bool = False, stats: dict | None = None) -> list[str]:
    """Continuations of `prompts` (one each; `num_samples` cycles them), or `num_samples`
    samples from the start of a document.

    `model`: a model or a run folder / model directory (then `tokenizer` defaults to the
    same folder). `decoding`: a DecodingConfig, its dict, or the command line's form
    ("retag", "guidance:2", "rerank:8"). `segmenter`: where segments end for retag and
    tag-aware ("lines" for code, "sentences" for prose, or a function). `scorer`: a phf
    Scorer, for rerank by the scorer. `enforce`: the attributes a multi-attribute run is
    conditioned on (default: every attribute it has). `stats` gets the decoding's counts.
    """
    from phf.model import load_model
    from phf.tokenizer import attribute_tokens, control_token_ids, load_tokenizer

    if isinstance(model, str):
        tokenizer = tokenizer or load_tokenizer(model)
        model = load_model(model)
    if tokenizer is None:
        raise ValueError("generate: pass the tokenizer with a model object (or a run folder as `model`)")
    if isinstance(decoding, str):
        decoding = parse_decoding(decoding)
    elif isinstance(decoding, dict):
        decoding = DecodingConfig(**decoding)
    controls = conditioning(tokenizer)
    attributes = sorted({t[2:].split(":")[0] for t in control_token_ids(tokenizer) if ":" in t})
    if attributes:  # a multi-attribute run: the enforced attributes' tags
        unknown = [a for a in enforce or () if attribute_tokens(a)[0] not in tokenizer.get_vocab()]
        if unknown:
            raise ValueError(f"enforce: {', '.join(unknown)} not among the run's attributes ({', '.join(attributes)})")
        controls = conditioning_controls(list(enforce) if enforce is not None else attributes)
    segment = get_segmenter(segmenter) if isinstance(segmenter, str) else segmenter
    rank = (lambda texts, _: [float(s) for s in scorer.score_texts(texts)]) if scorer is not None else None
    n = num_samples if num_samples is not None else (len(prompts) if prompts else 1)
    return generate_samples(model, tokenizer, n, prompts=list(prompts) if prompts else None,
                            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                            batch_size=batch_size, seed=seed, progress=progress, decoding=decoding,
                            segment=segment, rank=rank, stats=stats, **controls)
