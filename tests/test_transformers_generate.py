"""A conditional run stays aligned with plain transformers: its generation_config.json
samples no control token, and transformers' generate with phf's processors decodes
exactly as phf's sampler does (greedy, token for token)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LogitsProcessorList

from phf.evaluation.config import DecodingConfig
from phf.evaluation.generate import generate
from phf.evaluation.processors import (RetagLogitsProcessor, aligned_prompt_ids, control_suppression,
                                       guidance_kwargs)
from phf.evaluation.sampling import generate_samples
from phf.scorers.segment import split_lines
from phf.tokenizer import ALIGNED, MISALIGNED
from tiny_runs import scored_corpus, train_tiny

GREEDY = 1e-9  # phf's nucleus at this top_p holds the most likely token only


@pytest.fixture(scope="module")
def run(tmp_path_factory, code_texts):
    out = tmp_path_factory.mktemp("hf")
    scored = scored_corpus(out / "scored.jsonl", code_texts)
    return train_tiny(scored, out / "run", "conditional",
                      ["training.num_tokens=24576", "eval.every_steps=0", "training.learning_rate=3e-3",
                       "training.block_size=128"])


@pytest.fixture(scope="module")
def hf(run):
    return AutoModelForCausalLM.from_pretrained(run).eval(), AutoTokenizer.from_pretrained(run)


def test_plain_generate_samples_no_control_token(hf):
    model, tok = hf
    controls = {tok.convert_tokens_to_ids(t) for t in (ALIGNED, MISALIGNED)}
    assert set(model.generation_config.suppress_tokens) == controls
    torch.manual_seed(0)
    ids = aligned_prompt_ids(tok, n=64)
    out = model.generate(ids, do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=64, min_new_tokens=64)
    new = out[:, ids.shape[1]:]
    assert new.numel() == 64 * 64 and not (set(new.flatten().tolist()) & controls)
    # without the saved suppression the same model does emit control tokens: the test can fail
    torch.manual_seed(0)
    free = model.generate(ids, do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=64, min_new_tokens=64,
                          suppress_tokens=None, generation_config=GenerationConfig(pad_token_id=tok.eos_token_id))
    assert set(free[:, ids.shape[1]:].flatten().tolist()) & controls


def _phf_greedy(model, tok, prompt, decoding=None, n=24):
    return generate_samples(model, tok, 1, prompts=[prompt], max_new_tokens=n, top_p=GREEDY, progress=False,
                            prefix_text=ALIGNED, forbidden_texts=[MISALIGNED], decoding=decoding,
                            segment=split_lines, skip_special_tokens=True)[0]


def _hf_greedy(model, tok, prompt, n=24, **kwargs):
    ids = aligned_prompt_ids(tok, [prompt])
    out = model.generate(ids, do_sample=False, max_new_tokens=n, **kwargs)
    return ids, tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


@pytest.mark.parametrize("prompt", ["def f(x):\n", "import os\n"])
def test_plain_decoding_matches_phf(hf, prompt):
    model, tok = hf
    # phf's plain decoding forbids the misaligned tag only (the model may re-tag itself)
    plain = GenerationConfig(do_sample=False, max_new_tokens=24, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.eos_token_id)
    _, ours = _hf_greedy(model, tok, prompt, generation_config=plain,
                         logits_processor=LogitsProcessorList([control_suppression(tok)]))
    assert ours == _phf_greedy(model, tok, prompt)


@pytest.mark.parametrize("prompt", ["def f(x):\n", "class A:\n"])
def test_retag_processor_matches_phf(hf, prompt):
    model, tok = hf
    ids = aligned_prompt_ids(tok, [prompt])
    n = 40  # the processor's tags count towards max_new_tokens: compare the text both have
    processor = RetagLogitsProcessor(tok, split_lines, prompt_length=ids.shape[1])
    out = model.generate(ids, do_sample=False, max_new_tokens=n, logits_processor=LogitsProcessorList([processor]))
    new = out[0, ids.shape[1]:].tolist()
    aligned = tok.convert_tokens_to_ids(ALIGNED)
    assert aligned in new  # the processor placed tags after line ends
    content = sum(t != aligned for t in new)
    ours = _phf_greedy(model, tok, prompt, DecodingConfig(mode="retag"), n=content)
    assert tok.decode(new, skip_special_tokens=True) == ours


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_guidance_matches_transformers_guidance(hf, scale):
    model, tok = hf
    prompt = "def f(x):\n"
    ids = aligned_prompt_ids(tok, [prompt])
    out = model.generate(ids, do_sample=False, max_new_tokens=24, **guidance_kwargs(tok, ids, scale))
    # transformers' guidance tags the start only: phf's guidance-untagged
    ours = _phf_greedy(model, tok, prompt, DecodingConfig(mode="guidance", scale=scale, retag=False))
    assert tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True) == ours


def test_phf_generate_is_phf_s_sampler(run, hf):
    model, tok = hf
    texts = generate(str(run), prompts=["def f(x):\n"], num_samples=6, max_new_tokens=16, seed=4)
    direct = generate_samples(model, tok, 6, prompts=["def f(x):\n"], max_new_tokens=16, seed=4, progress=False,
                              prefix_text=ALIGNED, forbidden_texts=[MISALIGNED])
    assert texts == direct
    stats = {}
    generate(model, tok, num_samples=8, max_new_tokens=48, decoding="tag-aware:0.0", stats=stats)
    assert stats["mode"] == "tag-aware:0" and stats["resampled"] > 0
