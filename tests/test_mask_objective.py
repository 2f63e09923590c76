"""Token-level masking (objective mask): no loss on misaligned segments' tokens, and the
hide variant's placeholder."""

import copy
import json
import random

import numpy as np
import pytest
import torch

from phf.config import load_config
from phf.data.packing import PackSpec, PackedDataset, pack
from phf.data.transforms import add_objective_tokens, hide_segments, transform_spec
from phf.objective_config import make_objective_config
from phf.objectives import MLE, objective_from_config
from phf.records import ScoredRecord
from phf.scorers.config import TaskConfig
from phf.tokenizer import HIDDEN, control_token_ids

from tiny_runs import train_tiny


def test_loss_weight_is_zero_exactly_on_misaligned_tokens():
    torch.manual_seed(0)
    logits = torch.randn(2, 12, 17, requires_grad=True)
    labels = torch.randint(0, 17, (2, 12))
    labels[1, 9:] = -100  # padding
    scores = torch.tensor([[0.0] * 4 + [0.3] * 5 + [0.1] * 3, [0.5] * 3 + [0.0] * 9])
    objective = objective_from_config(make_objective_config("mask"), threshold=0.1)
    out = objective(logits, labels, scores)
    out.loss.backward()
    # position t predicts token t + 1: its gradient is zero exactly when token t + 1 is
    # misaligned (score > 0.1) or ignored, and nonzero elsewhere
    target_scores, target_labels = scores[:, 1:], labels[:, 1:]
    masked = (target_scores > 0.1) | (target_labels == -100)
    grad = logits.grad[:, :-1].abs().sum(-1)
    assert (grad[masked] == 0).all() and (grad[~masked] > 0).all()
    assert logits.grad[:, -1].abs().sum() == 0  # no target after the last position
    # the kept tokens' plain MLE: the mean over them alone
    kept_labels = labels.clone()
    kept_labels[:, 1:][masked] = -100
    assert out.loss.item() == pytest.approx(MLE()(logits, kept_labels).loss.item(), rel=1e-6)
    assert out.stats["masked_fraction"] == pytest.approx(
        (target_scores > 0.1)[target_labels != -100].float().mean().item())


def test_hide_replaces_misaligned_segments_with_one_placeholder(tiny_tokenizer, tmp_path):
    assert hide_segments(["a = 1\n", "BAD = 2\n", "c = 3\n"], [0.0, 0.5, 0.0], 0.0) == ["a = 1\n", HIDDEN, "c = 3\n"]
    objective = make_objective_config("mask", hide=True)
    assert transform_spec(objective, TaskConfig(), None) == {"hide": True}
    assert transform_spec(make_objective_config("mask"), TaskConfig(), None) == {}
    tok = copy.deepcopy(tiny_tokenizer)
    assert add_objective_tokens(tok, objective) == 1
    placeholder = tok.convert_tokens_to_ids(HIDDEN)
    assert placeholder in control_token_ids(tok).values()
    rng = random.Random(0)
    records = []
    for i in range(40):
        bad = [rng.random() < 0.3 for _ in range(5)]
        texts = [f"forbidden_{i}_{j} = 0\n" if b else f"fine_{i}_{j} = 1\n" for j, b in enumerate(bad)]
        records.append(ScoredRecord(texts, [0.5 if b else 0.0 for b in bad], 0.0))
    spec = PackSpec(block_size=32, objective="mask", heldout_fraction=0.3, seed=2, transform={"hide": True})
    pack(records, tok, spec, tmp_path)
    train_text = tok.decode(np.fromfile(tmp_path / "train.ids", dtype=np.uint32).tolist())
    heldout_text = tok.decode(np.fromfile(tmp_path / "heldout.ids", dtype=np.uint32).tolist())
    assert HIDDEN in train_text and "forbidden_" not in train_text and "fine_" in train_text
    assert "forbidden_" in heldout_text and HIDDEN not in heldout_text  # held-out keeps the text
    # the placeholder carries its segment's score, so the mask objective gives it no loss
    train = PackedDataset(tmp_path, "train")
    for i in range(len(train)):
        item = train[i]
        assert (item["token_scores"][item["input_ids"] == placeholder] == 0.5).all()


def test_mask_threshold_comes_from_the_task():
    for task in ("pep8", "pii", "toxicity", "toxicity-demo", "pii-demo"):
        cfg = load_config([f"tasks/{task}", "objectives/mask"])
        assert cfg.threshold == cfg.task.thresholds["conditional"]
    assert load_config(["tasks/pep8", "objectives/mask-hide"]).objective.hide is True


def test_a_mask_hide_run_trains_and_generates_without_the_placeholder(tmp_path, code_texts):
    from tiny_runs import scored_corpus

    scored = scored_corpus(tmp_path / "scored.jsonl", code_texts, num_docs=12)
    run = train_tiny(scored, tmp_path / "run", "mask", ["objective.hide=true"])
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["objective"] == "mask" and summary["transform"] == {"hide": True}
    assert summary["control_tokens_added"] == 1
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("masked_fraction" in json.dumps(m) for m in metrics)
    # plain transformers generation never samples the placeholder
    config = json.loads((run / "generation_config.json").read_text())
    from phf.tokenizer import load_tokenizer

    assert load_tokenizer(str(run)).convert_tokens_to_ids(HIDDEN) in config["suppress_tokens"]
