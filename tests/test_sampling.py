"""Sampling: the nucleus sampler draws from the same distribution as transformers'
top-p, and the decoding loop continues left-padded prompts as `model.generate` does."""

import copy

import pytest
import torch
from tiny_runs import tiny_lm, tiny_tokenizer
from transformers.generation.logits_process import TopPLogitsWarper

from phf.evaluation.nucleus import _in_nucleus, nucleus_sample
from phf.evaluation.sampling import generate_samples


def test_nucleus_matches_transformers_top_p_set():
    """The tokens our rejection test accepts are exactly those transformers' TopPLogitsWarper keeps."""
    torch.manual_seed(0)
    for top_p in (0.3, 0.7, 0.9, 0.99):
        scores = torch.randn(64, 500) * torch.rand(64, 1) * 4  # flat to peaked rows
        kept = torch.isfinite(TopPLogitsWarper(top_p)(None, scores.clone()))
        probs = torch.softmax(scores, dim=-1)
        every_token = torch.arange(500).expand(64, 500)
        ours = torch.stack([_in_nucleus(probs, every_token[:, i].contiguous(), top_p) for i in range(500)], dim=1)
        assert torch.equal(ours, kept), top_p


def test_nucleus_sample_frequencies():
    probs = torch.tensor([0.05, 0.5, 0.1, 0.2, 0.15])
    # top_p 0.8: the nucleus is 0.5, 0.2, 0.15 (the mass before 0.1 is already 0.85)
    expected = torch.tensor([0.0, 0.5, 0.0, 0.2, 0.15]) / 0.85
    torch.manual_seed(1)
    n = 40_000
    tokens = nucleus_sample(probs.log().expand(n, 5).contiguous(), top_p=0.8)
    freq = torch.bincount(tokens, minlength=5).float() / n
    assert freq[0] == 0 and freq[2] == 0
    sigma = (expected * (1 - expected) / n).sqrt()
    assert ((freq - expected).abs() <= 4 * sigma + 1e-9).all(), (freq, expected)
    # top_p 1: the whole distribution
    tokens = nucleus_sample(probs.log().expand(n, 5).contiguous(), top_p=1.0)
    freq = torch.bincount(tokens, minlength=5).float() / n
    assert ((freq - probs).abs() <= 4 * (probs * (1 - probs) / n).sqrt()).all(), freq


def test_suppressed_tokens_never_drawn():
    torch.manual_seed(2)
    scores = torch.randn(256, 50)
    scores[:, [3, 7]] = float("-inf")
    tokens = nucleus_sample(scores, top_p=0.95)
    assert not torch.isin(tokens, torch.tensor([3, 7])).any()


@pytest.fixture(scope="module")
def lm(code_texts):
    tok = tiny_tokenizer(code_texts[:20], vocab_size=400, control_tokens=True)
    return tiny_lm(tok, n_positions=96), tok


def test_decoding_matches_generate_on_left_padded_prompts(lm):
    """A nucleus of one token is greedy decoding: token for token what generate gives,
    for prompts of different lengths in one left-padded batch (KV cache, positions, mask)."""
    model, tok = lm
    prompts = ["def f(x):\n", "import os\nimport sys\n\n\nclass A(object):\n    pass\n", "x"]
    ours = generate_samples(model, tok, 3, prompts=prompts, max_new_tokens=20, top_p=1e-9, batch_size=3,
                            progress=False, skip_special_tokens=False)
    for prompt, text in zip(prompts, ours):
        ids = torch.tensor([[tok.eos_token_id] + tok(prompt).input_ids])
        ref = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=20,
                             pad_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
        assert text == tok.decode(ref[0, ids.shape[1]:]), prompt


def test_same_seed_same_samples_and_forbidden_texts_must_be_one_token(lm):
    model, tok = lm
    a = generate_samples(copy.deepcopy(model), tok, 4, max_new_tokens=10, seed=3, progress=False,
                         prefix_text="<|aligned|>", forbidden_texts=["<|misaligned|>"], skip_special_tokens=False)
    b = generate_samples(model, tok, 4, max_new_tokens=10, seed=3, progress=False,
                         prefix_text="<|aligned|>", forbidden_texts=["<|misaligned|>"], skip_special_tokens=False)
    assert a == b and not any("<|misaligned|>" in t for t in a)
    with pytest.raises(ValueError, match="only single tokens"):
        generate_samples(model, tok, 1, max_new_tokens=2, forbidden_texts=["def main"], progress=False)
