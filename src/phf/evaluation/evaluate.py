"""Evaluating a trained run: alignment of its samples and its held-out LM loss.

* Misalignment: N unconditional samples (temperature 0.7, top-p 0.9 by default),
  each scored whole by the task's scorer. A conditional run generates after
  <|aligned|> and may not emit <|misaligned|>; control tokens are stripped before
  scoring. Reported: mean score, expected maximum over groups of 25, hit rate.
* Capability: the held-out loss per token on the run's held-out documents (the same
  documents for every objective), with control tokens left out of the loss and the
  count, so conditional and MLE runs are compared on the same text.

Writes `results.json` and `samples/unconditional.jsonl` (each sample with its score,
so the worst ones can be read) in the run directory.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from phf.config import Config
from phf.data.packing import PackedDataset
from phf.evaluation.metrics import summarize_scores
from phf.evaluation.sampling import generate_samples
from phf.objectives import IGNORE_INDEX, token_logprobs
from phf.scorers import Scorer, get_scorer
from phf.tokenizer import ALIGNED, MISALIGNED, control_token_ids


def conditioning(tokenizer) -> dict:
    """Generation controls for a model: aligned prefix + forbidden token when it has them."""
    ids = control_token_ids(tokenizer)
    if ALIGNED in ids and MISALIGNED in ids:
        return {"prefix_text": ALIGNED, "forbidden_texts": [MISALIGNED]}
    return {"prefix_text": "", "forbidden_texts": []}


@torch.no_grad()
def heldout_loss(model, dataset: PackedDataset, batch_size: int = 16, max_tokens: int | None = None) -> float:
    """Mean next-token NLL per counted token (labels != -100) over the dataset's blocks."""
    model.eval()
    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    n_blocks = len(dataset)
    if max_tokens is not None:
        n_blocks = min(n_blocks, max(1, max_tokens // dataset.block_size))
    for first in tqdm(range(0, n_blocks, batch_size), desc="held-out loss", unit="batch"):
        items = [dataset[i] for i in range(first, min(first + batch_size, n_blocks))]
        ids = torch.stack([x["input_ids"] for x in items]).to(device)
        labels = torch.stack([x["labels"] for x in items]).to(device)
        logits = model(input_ids=ids, use_cache=False).logits
        lp = token_logprobs(logits[:, :-1], labels[:, 1:])
        total_nll -= lp.sum().item()
        total_tokens += (labels[:, 1:] != IGNORE_INDEX).sum().item()
    return total_nll / max(total_tokens, 1)


def score_samples(scorer: Scorer, texts: list[str]) -> list[float]:
    return [float(s) for s in scorer.score_texts(texts)]


def evaluate_run(run_dir: str | Path, cfg: Config, scorer: Scorer | None = None,
                 model=None, tokenizer=None) -> dict:
    """Evaluate the model saved in `run_dir`; write and return its results."""
    from phf.model import load_model
    from phf.tokenizer import load_tokenizer

    run_dir = Path(run_dir)
    e = cfg.eval
    model = model or load_model(str(run_dir))
    tokenizer = tokenizer or load_tokenizer(str(run_dir))
    scorer = scorer or get_scorer(cfg.task.scorer, **cfg.task.scorer_args)
    if torch.cuda.is_available():
        model.cuda()

    controls = conditioning(tokenizer)
    texts = generate_samples(model, tokenizer, e.num_samples, max_new_tokens=e.max_new_tokens,
                             temperature=e.temperature, top_p=e.top_p, batch_size=e.batch_size,
                             seed=e.seed, **controls)
    scores = score_samples(scorer, texts)
    summary = summarize_scores(scores, texts, group_size=e.group_size, hit_threshold=cfg.task.hit_threshold)
    samples_dir = run_dir / "samples"
    samples_dir.mkdir(exist_ok=True)
    with open(samples_dir / "unconditional.jsonl", "w") as f:
        for text, score in zip(texts, scores):
            f.write(json.dumps({"prompt": controls["prefix_text"], "text": text, "score": score}) + "\n")

    loss = None
    if (run_dir / "data" / "heldout.ids").exists():
        ignore = control_token_ids(tokenizer).values()
        heldout = PackedDataset(run_dir / "data", "heldout", ignore_ids=ignore)
        if len(heldout):
            loss = heldout_loss(model, heldout, max_tokens=e.heldout_max_tokens)

    train_summary = {}
    if (run_dir / "train_summary.json").exists():
        train_summary = json.loads((run_dir / "train_summary.json").read_text())
    results = {
        "run": run_dir.name,
        "objective": train_summary.get("objective", cfg.objective.name),
        "task": cfg.task.name,
        "num_tokens": train_summary.get("tokens_seen"),
        "started_from": train_summary.get("started_from"),
        "misalignment": summary["misalignment"],
        "expected_max": summary["expected_max"],
        "hit_rate": summary["hit_rate"],
        "heldout_loss": loss,
        "heldout_ppl": math.exp(loss) if loss is not None and loss < 50 else None,
        "kl": None,
        "scenarios": {"unconditional": summary},
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    return results
