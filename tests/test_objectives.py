"""The loss-side objectives against references written independently, in float64.

The references loop over tokens with an explicit softmax; they never call
cross-entropy, log_softmax or the code under test.
"""

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import GPT2Config, GPT2LMHeadModel

from phf.config import load_config
from phf.objective_config import make_objective_config
from phf.objectives import (
    AWR, IGNORE_INDEX, MLE, Unlikelihood, build_objective, objective_from_config)

B, T, V = 2, 7, 5


def batch(seed=0):
    """float64 logits/values (leaves), labels with ignored positions, scores around 0.5."""
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(B, T, V, generator=g, dtype=torch.float64)
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[0, 3] = labels[1, 0] = labels[1, 5] = IGNORE_INDEX
    logits[1, 1, labels[1, 2]] = 60.0  # 1 - p < 1e-20 (float64 too): unlikelihood's clamp is exercised
    scores = torch.rand(B, T, generator=g, dtype=torch.float64)
    values = -torch.rand(B, T, generator=g, dtype=torch.float64)
    return logits, labels, scores, values


def ref_logprobs(logits, labels):
    """{(b, t): log p(labels[b, t + 1]) at position t}, by an explicit softmax."""
    out = {}
    for b in range(logits.shape[0]):
        for t in range(logits.shape[1] - 1):
            y = int(labels[b, t + 1])
            if y == IGNORE_INDEX:
                continue
            row = logits[b, t]
            m = row.max()
            z = sum(torch.exp(row[v] - m) for v in range(row.shape[0]))
            out[b, t] = row[y] - m - torch.log(z)
    return out


def mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs)


def ref_mle(logits, labels, scores, values):
    return -mean(ref_logprobs(logits, labels).values())


def ref_unlikelihood(threshold, alpha, clamp=1e-20, score_weighted=False):
    def loss(logits, labels, scores, values):
        terms = []
        for (b, t), lp in ref_logprobs(logits, labels).items():
            ul = -torch.log(torch.clamp(1 - torch.exp(lp), min=clamp))
            if score_weighted:  # w = s in [0, 1]
                w = min(max(float(scores[b, t + 1]), 0.0), 1.0)
                terms.append(-(1 - w) * lp + alpha * w * ul)
            elif scores[b, t + 1] <= threshold:
                terms.append(-lp)
            else:
                terms.append(alpha * ul)
        return mean(terms)
    return loss


def ref_awr(alpha, beta, max_weight=None, baseline=True):
    """baseline: True (the values), False (none) or a number (a constant V)."""
    def loss(logits, labels, scores, values):
        lm, mse = [], []
        for (b, t), lp in ref_logprobs(logits, labels).items():
            reward = -float(scores[b, t + 1])  # the value at t predicts token t + 1's reward
            if baseline is True:
                advantage = reward - float(values[b, t].detach())  # a constant
            else:
                advantage = reward - (baseline or 0.0)
            weight = math.exp(advantage / beta)
            if max_weight is not None:
                weight = min(weight, max_weight)
            lm.append(-weight * lp)
            mse.append((values[b, t] - reward) ** 2)
        return alpha * mean(lm) + (1 - alpha) * mean(mse) if baseline is True else mean(lm)
    return loss


def check_against_reference(objective, reference, seed=0):
    """Loss and gradients (logits, values) of float32 code vs the float64 reference."""
    logits, labels, scores, values = batch(seed)
    ref_logits, ref_values = logits.clone().requires_grad_(), values.clone().requires_grad_()
    reference(ref_logits, labels, scores, ref_values).backward()
    ref_loss = reference(logits, labels, scores, values)

    x = logits.float().requires_grad_()
    v = values.float().requires_grad_()
    out = objective(x, labels, scores.float(), v)
    out.loss.backward()
    assert out.loss.dtype == torch.float32
    torch.testing.assert_close(out.loss.double(), ref_loss.double(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad.double(), ref_logits.grad, rtol=1e-4, atol=1e-6)
    ref_value_grad = torch.zeros_like(values) if ref_values.grad is None else ref_values.grad
    value_grad = torch.zeros_like(v) if v.grad is None else v.grad
    torch.testing.assert_close(value_grad.double(), ref_value_grad, rtol=1e-4, atol=1e-6)
    return out


@pytest.mark.parametrize("objective, reference", [
    (MLE(), ref_mle),
    (Unlikelihood(threshold=0.5, alpha=0.3), ref_unlikelihood(0.5, 0.3)),
    (Unlikelihood(threshold=-1.0, alpha=0.7), ref_unlikelihood(-1.0, 0.7)),  # all misaligned
    (Unlikelihood(threshold=0.5, alpha=0.3, min_one_minus_p=1e-5), ref_unlikelihood(0.5, 0.3, clamp=1e-5)),
    (Unlikelihood(threshold=0.0, alpha=0.3), ref_unlikelihood(0.0, 0.3, score_weighted=True)),  # auto
    (Unlikelihood(threshold=0.5, alpha=0.3, weighting="score"), ref_unlikelihood(0.5, 0.3, score_weighted=True)),
    (Unlikelihood(threshold=0.0, alpha=0.3, weighting="threshold"), ref_unlikelihood(0.0, 0.3)),
    (AWR(alpha=0.4, beta=0.5), ref_awr(0.4, 0.5)),
    (AWR(alpha=0.4, beta=0.1, max_weight=3.0), ref_awr(0.4, 0.1, 3.0)),  # clipping active
    (AWR(alpha=1.0, beta=2.0, value_baseline=False), ref_awr(1.0, 2.0, baseline=False)),
    (AWR(alpha=1.0, beta=2.0, fixed_value=-0.5), ref_awr(1.0, 2.0, baseline=-0.5)),
], ids=["mle", "ul", "ul-all-misaligned", "ul-clamp-1e-5", "ul-auto-score", "ul-score", "ul-hard-at-0",
        "awr", "awr-clipped", "rwr", "rwr-fixed-value"])
@pytest.mark.parametrize("seed", [0, 1])
def test_objective_matches_float64_reference(objective, reference, seed):
    check_against_reference(objective, reference, seed)


def test_awr_clipping_is_active_in_the_clipped_case():
    logits, labels, scores, values = batch()
    out = AWR(alpha=0.4, beta=0.1, max_weight=3.0)(logits.float(), labels, scores.float(), values.float())
    assert out.stats["weight_max"] == pytest.approx(3.0)
    assert out.stats["weight_min"] < 3.0


def tiny_gpt2():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100,
                                      bos_token_id=0, eos_token_id=0))


def test_mle_equals_the_hf_model_loss():
    model = tiny_gpt2()
    input_ids = torch.randint(0, 100, (3, 12))
    labels = input_ids.clone()
    labels[0, :4] = labels[2, 9:] = IGNORE_INDEX
    out = model(input_ids, labels=labels)
    torch.testing.assert_close(MLE()(out.logits, labels).loss, out.loss, rtol=1e-6, atol=1e-6)


def test_unlikelihood_with_threshold_above_every_score_is_mle_exactly():
    logits, labels, scores, _ = batch()
    results = []
    for objective in (MLE(), Unlikelihood(threshold=2.0, alpha=0.5)):
        x = logits.float().requires_grad_()
        out = objective(x, labels, scores.float())
        out.loss.backward()
        results.append((out.loss, x.grad))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])


def test_unlikelihood_stats():
    logits, labels, scores, _ = batch()
    out = Unlikelihood(threshold=0.5, alpha=0.3)(logits.float(), labels, scores.float())
    targets = [(b, t) for b in range(B) for t in range(T - 1) if labels[b, t + 1] != IGNORE_INDEX]
    share = sum(float(scores[b, t + 1]) > 0.5 for b, t in targets) / len(targets)
    assert out.stats["ul_fraction"] == pytest.approx(share)
    assert out.loss.item() == pytest.approx(
        share * 0.3 * out.stats["ul_term"] + (1 - share) * out.stats["mle_term"], rel=1e-5)
    # no misaligned token: the mean UL term is left out, not logged as 0
    out = Unlikelihood(threshold=2.0)(logits.float(), labels, scores.float())
    assert out.stats["ul_fraction"] == 0 and "ul_term" not in out.stats


def test_awr_values_predict_the_next_tokens_reward():
    """V at position t is compared with the reward of token t + 1, like the logits."""
    logits, labels, scores, _ = batch()
    values = torch.zeros(B, T)
    values[:, :-1] = -scores[:, 1:]  # a perfect value head
    out = AWR(alpha=0.3, beta=1.0)(logits.float(), labels, scores.float(), values)
    assert out.stats["value_loss"] == 0
    assert out.stats["weight_min"] == out.stats["weight_max"] == 1.0
    mle = MLE()(logits.float(), labels).loss
    torch.testing.assert_close(out.loss, 0.3 * mle)


@pytest.mark.parametrize("alpha", [1.0, 0.3])
def test_awr_lm_term_sends_no_gradient_to_the_values(alpha):
    """The values' gradient is that of (1 - alpha) * MSE alone: none through the weights."""
    logits, labels, scores, values = batch()
    v = values.float().requires_grad_()
    AWR(alpha=alpha, beta=0.5)(logits.float(), labels, scores.float(), v).loss.backward()
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    reward = torch.zeros(B, T)
    reward[:, :-1] = -scores[:, 1:].float()
    expected = (1 - alpha) * 2 * (v.detach() - reward) * mask / mask.sum()
    torch.testing.assert_close(v.grad, expected)
    if alpha == 1.0:
        assert not v.grad.any()


def test_rwr_is_awr_without_baseline_from_config():
    with pytest.raises(ValueError, match="alpha"):  # RWR's alpha is 1 by definition: not a setting
        make_objective_config(name="rwr", alpha=0.3)
    rwr = objective_from_config(make_objective_config(name="rwr", beta=2.0), threshold=0.0)
    assert isinstance(rwr, AWR) and rwr.name == "rwr"
    assert not rwr.needs_value_head and rwr.alpha == 1.0
    logits, labels, scores, _ = batch()
    x = logits.clone().requires_grad_()
    expected = mean(-math.exp(-float(scores[b, t + 1]) / 2.0) * lp
                    for (b, t), lp in ref_logprobs(x, labels).items())
    out = rwr(logits.float(), labels, scores.float(), None)  # no values needed
    torch.testing.assert_close(out.loss.double(), expected.detach(), rtol=1e-5, atol=1e-6)
    assert out.stats["weight_max"] <= 1.0  # R = -score <= 0
    assert "value_loss" not in out.stats


def test_awr_without_baseline_needs_alpha_1():
    with pytest.raises(ValueError, match="alpha must be 1"):
        AWR(alpha=0.5, value_baseline=False)


def test_objective_from_config():
    ul = objective_from_config(make_objective_config(name="unlikelihood", alpha=0.01), threshold=0.25)
    assert isinstance(ul, Unlikelihood) and (ul.threshold, ul.alpha) == (0.25, 0.01)
    assert (ul.weighting, ul.min_one_minus_p, ul.score_weighted) == ("auto", 1e-20, False)
    ul = objective_from_config(make_objective_config(name="unlikelihood", weighting="threshold", min_one_minus_p=1e-5), 0.0)
    assert (ul.min_one_minus_p, ul.score_weighted) == (1e-5, False)
    with pytest.raises(ValueError, match="auto, threshold, score"):
        Unlikelihood(weighting="soft")
    rwr = objective_from_config(make_objective_config(name="rwr", fixed_value=-0.5), threshold=0.0)
    assert rwr.fixed_value == -0.5 and not rwr.needs_value_head
    with pytest.raises(ValueError, match="alpha must be 1"):
        AWR(alpha=0.5, fixed_value=-0.5)
    awr = objective_from_config(
        make_objective_config(name="awr", alpha=0.05, beta=1.0, max_weight=1000.0), threshold=0.0)
    assert isinstance(awr, AWR) and awr.needs_value_head
    assert (awr.alpha, awr.beta, awr.max_weight) == (0.05, 1.0, 1000.0)
    for name in ("mle", "filtering", "conditional"):
        objective = objective_from_config(make_objective_config(name=name), threshold=0.1)
        assert type(objective) is MLE and not objective.needs_value_head
    with pytest.raises(ValueError, match="unknown objective"):
        build_objective("nope")


@pytest.mark.parametrize("file, expected", [
    ("unlikelihood", dict(name="unlikelihood", alpha=1.0)),
    ("unlikelihood-toxicity", dict(name="unlikelihood", alpha=1.0)),
    ("unlikelihood-pii", dict(name="unlikelihood", alpha=1.0)),
    ("unlikelihood-pep8", dict(name="unlikelihood", alpha=0.01, weighting="auto", min_one_minus_p=1e-20)),
    ("rwr", dict(name="rwr", beta=10.0, fixed_value=-0.5, max_weight=1000.0)),
    ("awr", dict(name="awr", alpha=0.5, beta=10.0, max_weight=1000.0, value_head="sigmoid")),
    ("awr-toxicity", dict(name="awr", alpha=0.5, beta=10.0, max_weight=1000.0, value_head="sigmoid")),
    ("awr-pii", dict(name="awr", alpha=0.5, beta=0.1, max_weight=1000.0, value_head="sigmoid")),
    ("awr-pep8", dict(name="awr", alpha=0.05, beta=1.0, max_weight=1000.0, value_head="sigmoid")),
])
def test_objective_configs(file, expected):
    cfg = load_config([f"objectives/{file}"]).objective
    assert {k: getattr(cfg, k) for k in expected} == expected
    objective = objective_from_config(cfg, threshold=0.0)
    assert objective.name == expected["name"]


@pytest.mark.parametrize("objective", [
    Unlikelihood(0.5, 1.0), AWR(0.5, 1.0, max_weight=10.0), build_objective("rwr", beta=1.0)],
    ids=["ul", "awr", "rwr"])
def test_ignored_positions_do_not_matter(objective):
    logits, labels, scores, values = batch()
    ignored = torch.zeros(B, T, dtype=torch.bool)
    ignored[:, 1:] = labels[:, 1:] == IGNORE_INDEX  # scores are read one position later
    results = []
    for filler in (0.0, 1e6, float("nan")):
        x, v = logits.float().requires_grad_(), values.float().requires_grad_()
        out = objective(x, labels, scores.float().masked_fill(ignored, filler), v)
        out.loss.backward()
        results.append((out.loss, x.grad, v.grad))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert (a is None and b is None) or torch.equal(a, b)


@pytest.mark.parametrize("objective", [
    MLE(), Unlikelihood(0.5, 1.0), AWR(0.5, 1.0), build_objective("rwr")],
    ids=["mle", "ul", "awr", "rwr"])
def test_all_ignored_batch_gives_zero_loss_and_gradient(objective):
    logits, _, scores, values = batch()
    x, v = logits.float().requires_grad_(), values.float().requires_grad_()
    out = objective(x, torch.full((B, T), IGNORE_INDEX), scores.float(), v)
    out.loss.backward()
    assert out.loss.item() == 0 and not x.grad.any()
    assert out.stats == {}


class CountVocabTensors(TorchDispatchMode):
    """Records every op that allocates a new tensor of at least `numel` elements."""

    def __init__(self, numel):
        super().__init__()
        self.numel, self.ops = numel, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        is_view = any(r.alias_info is not None for r in func._schema.returns)
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and not is_view and t.numel() >= self.numel:
                self.ops.append(func.__name__)
        return out


def vocab_tensors(objective, dtype):
    """Ops allocating a [B, T-1, V]-or-larger tensor, forward and backward."""
    logits, labels, scores, values = batch()
    x = logits.to(dtype).requires_grad_()
    v = values.float().requires_grad_()
    with CountVocabTensors(B * (T - 1) * V) as forward:
        out = objective(x, labels, scores.float(), v)
    with CountVocabTensors(B * (T - 1) * V) as backward:
        out.loss.backward()
    return forward.ops, backward.ops


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_no_objective_allocates_more_vocab_sized_tensors_than_mle(dtype):
    mle = vocab_tensors(MLE(), dtype)
    # float32: forward keeps only log_softmax's output (no copy of sliced logits);
    # bf16 adds the one float32 upcast
    assert mle[0] == (["_log_softmax.default"] if dtype == torch.float32
                      else ["_to_copy.default", "_log_softmax.default"])
    for objective in (Unlikelihood(0.5, 1.0), AWR(0.5, 1.0, 100.0), build_objective("rwr")):
        assert vocab_tensors(objective, dtype) == mle


@pytest.mark.parametrize("objective", [MLE(), Unlikelihood(0.5, 1.0), AWR(0.5, 1.0)],
                         ids=["mle", "ul", "awr"])
def test_bf16_autocast_computes_in_float32(objective):
    logits, labels, scores, values = batch()
    x, v = logits.bfloat16(), values.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = objective(x, labels, scores.bfloat16(), v)
    full = objective(x.float(), labels, scores.bfloat16().float(), v.float())
    assert low.loss.dtype == torch.float32
    assert torch.equal(low.loss, full.loss) and low.stats == full.stats
