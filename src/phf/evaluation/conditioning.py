"""Evaluating a model trained on several attributes under every conditioning.

A conditioning names the attributes generation enforces: the sample starts with
their <|attr:aligned|> tokens and may never emit their <|attr:misaligned|> tokens;
the other attributes are left unspecified. The result is a table with a row per
conditioning and a column per attribute (the mean misalignment score of the samples).
"""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path
from typing import Sequence

from phf.evaluation.metrics import summarize_scores
from phf.evaluation.sampling import generate_samples
from phf.tokenizer import attribute_tokens


def conditioning_controls(enforced: Sequence[str]) -> dict:
    """Generation controls that enforce `enforced` attributes and leave the rest open."""
    return {"prefix_text": "".join(attribute_tokens(a)[0] for a in enforced),
            "forbidden_texts": [attribute_tokens(a)[1] for a in enforced]}


def all_conditionings(attributes: Sequence[str]) -> list[tuple[str, ...]]:
    """None enforced, each attribute alone, ..., all of them."""
    return [c for k in range(len(attributes) + 1) for c in combinations(attributes, k)]


def conditioning_name(enforced: Sequence[str]) -> str:
    return " + ".join(f"{a} aligned" for a in enforced) if enforced else "unconditional"


def conditioning_table(model, tokenizer, scorer, eval_cfg, out_dir: str | Path | None = None,
                       conditionings: list[tuple[str, ...]] | None = None, hit_thresholds: dict | None = None) -> list[dict]:
    """One row per conditioning: {"conditioning", "enforced", <attribute>: mean score, ...}.

    `scorer` is a MultiScorer (`score_texts_by_attribute` gives {attribute: scores}).
    Samples with their scores go to `out_dir/samples/conditioning-<name>.jsonl`.
    """
    attributes = list(scorer.attributes)
    rows = []
    for enforced in conditionings if conditionings is not None else all_conditionings(attributes):
        # the tag modes enforce the enforced attributes; with none enforced there is nothing to enforce
        decoding = eval_cfg.decoding if enforced or not eval_cfg.decoding.uses_tags else None
        texts = generate_samples(model, tokenizer, eval_cfg.num_samples, max_new_tokens=eval_cfg.max_new_tokens,
                                 temperature=eval_cfg.temperature, top_p=eval_cfg.top_p,
                                 batch_size=eval_cfg.batch_size, seed=eval_cfg.seed, decoding=decoding,
                                 segment=scorer.segment, rank=lambda c, _: [float(x) for x in scorer.score_texts(c)],
                                 **conditioning_controls(enforced))
        scores = scorer.score_texts_by_attribute(texts)
        row = {"conditioning": conditioning_name(enforced), "enforced": list(enforced)}
        for a in attributes:
            summary = summarize_scores(scores[a], texts, group_size=eval_cfg.group_size,
                                       hit_threshold=(hit_thresholds or {}).get(a, 0.0))
            row[a] = summary["misalignment"]
            row[f"{a}/expected_max"] = summary["expected_max"]
        rows.append(row)
        if out_dir is not None:
            path = Path(out_dir) / "samples" / f"conditioning-{'-'.join(enforced) or 'none'}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w") as f:
                for i, text in enumerate(texts):
                    f.write(json.dumps({"text": text, **{a: scores[a][i] for a in attributes}}) + "\n")
    return rows


def evaluate_conditionings(model, tokenizer, scorer, eval_cfg, out_dir: str | Path | None = None) -> list[dict]:
    """`conditioning_table` over the attributes whose control tokens the model has
    (a model trained without them, e.g. MLE, gets the unconditional row only)."""
    known = [a for a in scorer.attributes if attribute_tokens(a)[0] in tokenizer.get_vocab()]
    return conditioning_table(model, tokenizer, scorer, eval_cfg, out_dir, all_conditionings(known))
