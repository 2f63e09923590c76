"""Models: presets with padded vocabularies, control-token rows, padding never sampled,
and a compiled training run."""

import copy
import json

import pytest
import torch
from tiny_runs import scored_corpus, train_tiny

from phf.config import ModelConfig
from phf.evaluation.sampling import generate_samples
from phf.model import (
    build_model,
    padded_vocab_size,
    padding_token_ids,
    resize_for_new_tokens,
)
from phf.tokenizer import add_control_tokens

TINY = dict(config_overrides={"n_layer": 1, "n_embd": 32, "n_head": 2})


def test_padded_vocab_size():
    assert [padded_vocab_size(n, 64) for n in (1, 64, 65, 50257)] == [64, 64, 128, 50304]
    assert padded_vocab_size(50257, 1) == 50257


@pytest.fixture
def conditional_tokenizer(tiny_tokenizer):
    """The shared BPE (512 tokens) plus the two control tokens: 514, not a multiple of 64."""
    tok = copy.deepcopy(tiny_tokenizer)
    add_control_tokens(tok)
    return tok


def test_new_model_pads_its_embedding_matrix(conditional_tokenizer):
    tok = conditional_tokenizer
    model = build_model(ModelConfig(**TINY), len(tok), 32)
    rows = model.get_input_embeddings().weight.shape[0]
    assert rows == 576 and padding_token_ids(model, tok) == list(range(514, 576))
    exact = build_model(ModelConfig(pad_vocab_to_multiple_of=1, **TINY), len(tok), 32)
    assert exact.get_input_embeddings().weight.shape[0] == 514 and not padding_token_ids(exact, tok)


def test_control_tokens_in_the_padding_start_at_the_mean_of_the_real_rows():
    torch.manual_seed(0)
    model = build_model(ModelConfig(**TINY), 500, 32)  # a checkpoint: 500 tokens in 512 rows
    before = model.get_input_embeddings().weight.detach().clone()
    assert resize_for_new_tokens(model, 502, old_vocab_size=500, pad_to_multiple_of=64) == 2
    after = model.get_input_embeddings().weight.detach()
    assert after.shape == before.shape == (512, 32)  # they fit in the padding rows: no growth
    mean = before[:500].mean(dim=0)
    for row in after[500:502]:
        assert (row - mean).abs().max() < 0.05 and not torch.equal(row, mean)  # mean + small noise
    assert torch.equal(after[:500], before[:500]) and torch.equal(after[502:], before[502:])


def test_tokens_beyond_the_padding_grow_the_matrix_to_the_next_multiple():
    torch.manual_seed(0)
    model = build_model(ModelConfig(pad_vocab_to_multiple_of=1, **TINY), 100, 32)
    assert resize_for_new_tokens(model, 130, old_vocab_size=100, pad_to_multiple_of=64) == 30
    assert model.get_input_embeddings().weight.shape[0] == 192
    assert model.get_output_embeddings().weight.shape[0] == 192


def test_padding_rows_are_never_sampled(conditional_tokenizer):
    tok = conditional_tokenizer
    torch.manual_seed(0)
    model = build_model(ModelConfig(**TINY), len(tok), 64)
    pad = padding_token_ids(model, tok)
    assert pad
    seen = []

    def favour_padding(module, args, output):
        output.logits[..., pad] += 50.0  # the padding rows would win every draw
        return output

    def record(module, args, kwargs, output):
        seen.append(kwargs["input_ids"][:, -1:].clone())

    model.register_forward_hook(favour_padding)
    model.register_forward_hook(record, with_kwargs=True)
    texts = generate_samples(model, tok, 6, max_new_tokens=8, batch_size=6, progress=False)
    drawn = torch.cat(seen[1:], dim=1)  # the tokens fed back: each step's draw
    assert drawn.numel() >= 6 * 7 and int(drawn.max()) < len(tok)
    assert all(texts)


def test_compiled_training_with_a_graph_break_in_the_loss(tmp_path, code_texts):
    """training.compile=true: the model and the objective compiled (unlikelihood's
    statistics leave the graph); the run trains, logs those statistics and saves."""
    from torch._dynamo.utils import counters

    counters.clear()
    scored = scored_corpus(tmp_path / "scored.jsonl", code_texts, num_docs=8)
    run = train_tiny(scored, tmp_path / "run", "unlikelihood",
                     ["training.compile=true", "training.num_tokens=1536", "eval.every_steps=0"])
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert len(losses) >= 2 and all(torch.isfinite(torch.tensor(losses)))
    assert any("objective/ul_fraction" in m for m in metrics)
    assert (run / "model.safetensors").exists()
    # compiled for real: the model's graph and the loss's, split where its statistics leave it
    assert counters["stats"]["unique_graphs"] >= 2
