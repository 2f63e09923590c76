import math

import pytest
import torch
from tiny_runs import save_tiny_lm

import phf.evaluation.kl as kl_module
from phf.evaluation.kl import kl_to_reference, sequence_logprobs

CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "import os\nprint(os.getcwd())\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "for i in range(10):\n    if i % 2 == 0:\n        print(i)\n",
] * 20


def make_lm(path, vocab_size=300, seed=0, corpus=CORPUS, control_tokens=False):
    return save_tiny_lm(path, corpus, vocab_size, seed, control_tokens=control_tokens)


@pytest.fixture(scope="module")
def lms(tmp_path_factory):
    root = tmp_path_factory.mktemp("lms")
    return {
        "ref": make_lm(root / "ref", seed=0),
        "other": make_lm(root / "other", seed=1),
        "other_tok": make_lm(root / "other_tok", vocab_size=400, seed=2, corpus=CORPUS[::-1] + ["x = 1\n"]),
        "cond": make_lm(root / "cond", seed=3, control_tokens=True),
    }


def _unbatched_logprob(model, tokenizer, text, prefix="", exclude=()):
    context = [tokenizer.eos_token_id] + tokenizer(prefix, add_special_tokens=False).input_ids
    ids = context + tokenizer(text, add_special_tokens=False).input_ids
    x = torch.tensor([ids])
    logits = model(x).logits[0, :-1].float()
    logits[:, list(exclude)] = float("-inf")
    logprobs = torch.log_softmax(logits, dim=-1)
    return sum(logprobs[i - 1, ids[i]].item() for i in range(len(context), len(ids)))


def test_sequence_logprobs_batched_equals_one_by_one(lms):
    from phf.model import load_model
    from phf.tokenizer import load_tokenizer

    model, tok = load_model(lms["ref"]), load_tokenizer(lms["ref"])
    texts = ["def f(x):\n    return x\n", "", "print(1)", "class A:\n    pass\n" * 3]
    batched = sequence_logprobs(model, tok, texts, batch_size=3)
    expected = [_unbatched_logprob(model, tok, t) for t in texts]
    assert batched[1] == 0.0  # an empty text has probability 1 as a prefix
    assert batched == pytest.approx(expected, abs=1e-4)
    assert all(b < 0 for i, b in enumerate(batched) if i != 1)
    # a context prefix is not scored; excluded tokens renormalise the rest upwards
    kw = dict(prefix="import os\n", exclude=[5, 6, 7])
    batched = sequence_logprobs(model, tok, texts, prefix_text=kw["prefix"],
                                exclude_token_ids=kw["exclude"], batch_size=2)
    assert batched == pytest.approx([_unbatched_logprob(model, tok, t, **kw) for t in texts], abs=1e-4)
    assert batched[0] > _unbatched_logprob(model, tok, texts[0], prefix=kw["prefix"])


def test_kl_to_itself_is_zero(lms, tmp_path):
    result = kl_to_reference(lms["ref"], lms["ref"], num_samples=12, max_new_tokens=24,
                             cache_dir=tmp_path)
    assert result["kl"] == pytest.approx(0.0, abs=1e-5)
    assert result["num_samples"] == 12
    assert result["ref_logprob"] < 0


def test_kl_to_other_models_is_positive(lms, tmp_path):
    same_tok = kl_to_reference(lms["ref"], lms["other"], num_samples=12, max_new_tokens=24,
                               cache_dir=tmp_path)
    other_tok = kl_to_reference(lms["ref"], lms["other_tok"], num_samples=12, max_new_tokens=24,
                                cache_dir=tmp_path)
    for result in (same_tok, other_tok):
        assert result["kl"] > 0.5
        assert math.isfinite(result["kl"]) and result["kl_per_char"] > 0
        assert result["kl_per_char"] == pytest.approx(result["kl"] / result["mean_chars"])
    assert other_tok["model_logprob"] != same_tok["model_logprob"]


def test_reference_samples_are_cached(lms, tmp_path, monkeypatch):
    import phf.evaluation.kl as kl

    calls = []
    real = kl.generate_samples

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(kl, "generate_samples", counting)
    kw = dict(num_samples=8, max_new_tokens=16, cache_dir=tmp_path)
    first = kl_to_reference(lms["ref"], lms["other"], **kw)
    second = kl_to_reference(lms["ref"], lms["other"], **kw)
    assert len(calls) == 1
    assert (first["cached"], second["cached"]) == (False, True)
    assert second["kl"] == pytest.approx(first["kl"], abs=1e-5)
    # different sampling settings are a different cache entry
    third = kl_to_reference(lms["ref"], lms["other"], **{**kw, "seed": 1})
    assert len(calls) == 2 and not third["cached"]
    assert third["samples_path"] != first["samples_path"]


def test_conditional_model_scored_after_aligned_token(lms, tmp_path):
    kw = dict(num_samples=8, max_new_tokens=16, cache_dir=tmp_path)
    plain = kl_to_reference(lms["cond"], lms["cond"], conditional=False, **kw)
    auto = kl_to_reference(lms["cond"], lms["cond"], **kw)
    assert plain["kl"] == pytest.approx(0.0, abs=1e-5)
    assert abs(auto["kl"]) > 1e-3  # the <|aligned|> context and masking change p_model


def test_too_long_text_is_a_clear_error(lms):
    from phf.model import load_model
    from phf.tokenizer import load_tokenizer

    model, tok = load_model(lms["ref"]), load_tokenizer(lms["ref"])
    with pytest.raises(ValueError, match="positions"):
        sequence_logprobs(model, tok, ["zq" * 400])


def test_default_cache_lives_beside_the_reference(lms):
    assert kl_module._default_cache_dir(lms["ref"]).parent.name == "ref"
