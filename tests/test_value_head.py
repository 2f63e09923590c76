"""The AWR value head: a model parameter that trains from the value loss only and
round-trips through save_pretrained / from_pretrained."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from phf.objectives import AWR, IGNORE_INDEX
from phf.value_head import add_value_head, compute_values, load_value_head


def tiny_gpt2(seed=0):
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, bos_token_id=0,
                        eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(config)


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, 100, (4, 16), generator=g)
    labels = input_ids.clone()
    labels[0, :5] = IGNORE_INDEX
    # a reward the head can learn: it depends on the token to predict
    scores = (input_ids % 7).float() / 7
    return input_ids, labels, scores


def awr_step(model, objective, seed=0):
    input_ids, labels, scores = inputs(seed)
    out = model(input_ids, output_hidden_states=True)
    values = compute_values(model, out.hidden_states[-1])
    return objective(out.logits, labels, scores, values)


@pytest.mark.parametrize("kind, keys, start", [
    ("sigmoid", {"value_head.weight"}, -0.5),  # the released head: -sigmoid(0)
    ("linear", {"value_head.weight", "value_head.bias"}, 0.0),
])
def test_value_head_is_a_zero_initialised_model_parameter(kind, keys, start):
    model = tiny_gpt2()
    add_value_head(model, kind=kind)
    names = {name for name, _ in model.named_parameters() if name.startswith("value_head.")}
    assert names == keys == {k for k in model.state_dict() if k.startswith("value_head.")}
    assert not any(p.any() for p in model.value_head.parameters())
    assert model.config.phf_value_head == kind
    input_ids, _, _ = inputs()
    hidden = model(input_ids, output_hidden_states=True).hidden_states[-1]
    values = compute_values(model, hidden)
    assert values.shape == input_ids.shape and (values == start).all()


def test_add_value_head_defaults_to_the_released_sigmoid_head():
    model = tiny_gpt2()
    add_value_head(model)
    assert model.value_head.kind == "sigmoid" and model.value_head.bias is None
    torch.nn.init.normal_(model.value_head.weight, std=10.0)  # large pre-activations
    hidden = torch.randn(2, 5, 32)
    values = compute_values(model, hidden)
    torch.testing.assert_close(values, -torch.sigmoid(hidden @ model.value_head.weight[0]))
    assert ((values >= -1) & (values <= 0)).all() and values.min() < -0.99 and values.max() > -0.01
    with pytest.raises(ValueError, match="sigmoid, linear"):
        add_value_head(model, kind="tanh")


def test_compute_values_finds_the_head_through_a_wrapper():
    model = tiny_gpt2()
    add_value_head(model)
    torch.nn.init.normal_(model.value_head.weight)
    wrapper = torch.nn.Module()
    wrapper.module = model  # what DDP and accelerate wrappers look like
    hidden = torch.randn(2, 3, 32)
    assert torch.equal(compute_values(wrapper, hidden), compute_values(model, hidden))


@pytest.mark.parametrize("kind", ["sigmoid", "linear"])
@pytest.mark.parametrize("shard", [False, True])
def test_save_and_reload_round_trip_exactly(tmp_path, shard, kind):
    model = tiny_gpt2()
    add_value_head(model, kind=kind)
    for p in model.value_head.parameters():
        torch.nn.init.normal_(p)
    model.save_pretrained(tmp_path, **({"max_shard_size": "20KB"} if shard else {}))
    assert (tmp_path / "model.safetensors.index.json").exists() == shard

    reloaded, info = AutoModelForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    # transformers loads the LM, reports the head's keys as unexpected and drops them
    head_keys = {"value_head.weight"} | ({"value_head.bias"} if kind == "linear" else set())
    assert set(info["unexpected_keys"]) == head_keys
    assert not info["missing_keys"] and not hasattr(reloaded, "value_head")
    assert load_value_head(reloaded, tmp_path)
    assert reloaded.value_head.kind == kind

    expected, actual = model.state_dict(), reloaded.state_dict()
    assert set(expected) == set(actual)
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    assert reloaded.lm_head.weight is reloaded.transformer.wte.weight  # still tied
    input_ids, _, _ = inputs()
    with torch.no_grad():
        a, b = (m(input_ids, output_hidden_states=True) for m in (model.eval(), reloaded.eval()))
        assert torch.equal(a.logits, b.logits)
        assert torch.equal(compute_values(model, a.hidden_states[-1]),
                           compute_values(reloaded, b.hidden_states[-1]))


@pytest.mark.parametrize("kind", ["sigmoid", "linear"])
def test_a_checkpoint_without_the_recorded_kind_is_read_from_its_keys(tmp_path, kind):
    """Checkpoints saved before the kind was recorded: a bias means "linear"."""
    model = tiny_gpt2()
    add_value_head(model, kind=kind)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config.pop("phf_value_head") == kind
    (tmp_path / "config.json").write_text(json.dumps(config))
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert load_value_head(reloaded, tmp_path) and reloaded.value_head.kind == kind


def test_loading_into_a_head_of_another_kind_is_an_error(tmp_path):
    model = tiny_gpt2()
    add_value_head(model, kind="linear")
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    add_value_head(reloaded, kind="sigmoid")
    with pytest.raises(ValueError, match="saved value head is 'linear'.*'sigmoid'"):
        load_value_head(reloaded, tmp_path)


def test_load_into_an_existing_head_keeps_its_settings(tmp_path):
    model = tiny_gpt2()
    add_value_head(model)
    torch.nn.init.normal_(model.value_head.weight)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    add_value_head(reloaded, detach=True)
    assert load_value_head(reloaded, tmp_path)
    assert reloaded.value_head.detach_input
    assert reloaded.value_head.weight.dtype == torch.bfloat16
    assert torch.equal(reloaded.value_head.weight, model.value_head.weight.bfloat16())


def test_checkpoint_without_value_head(tmp_path):
    tiny_gpt2().save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert not load_value_head(model, tmp_path)
    assert not hasattr(model, "value_head")
    assert not load_value_head(model, tmp_path / "missing")


def head_and_trunk_grads(model):
    head = [p.grad for n, p in model.named_parameters() if n.startswith("value_head.")]
    trunk = [p.grad for n, p in model.named_parameters() if not n.startswith("value_head.")]
    return head, trunk


def nonzero(grads):
    return any(g is not None and g.any() for g in grads)


def test_lm_term_sends_no_gradient_to_the_value_head():
    model = tiny_gpt2()
    add_value_head(model)
    torch.nn.init.normal_(model.value_head.weight, std=0.1)
    # alpha = 1: the value loss has weight 0 and the LM term cannot reach the head
    awr_step(model, AWR(alpha=1.0, beta=0.5)).loss.backward()
    head, trunk = head_and_trunk_grads(model)
    assert not nonzero(head) and nonzero(trunk)

    # alpha < 1: the head's gradient is that of (1 - alpha) * value loss alone
    model.zero_grad()
    awr_step(model, AWR(alpha=0.3, beta=0.5)).loss.backward()
    full = [g.clone() for g in head_and_trunk_grads(model)[0]]
    model.zero_grad()
    input_ids, labels, scores = inputs()
    values = compute_values(model, model(input_ids, output_hidden_states=True).hidden_states[-1])
    mask = labels[:, 1:] != IGNORE_INDEX
    mse = ((values[:, :-1] + scores[:, 1:])[mask] ** 2).mean()
    (0.7 * mse).backward()
    for a, b in zip(full, head_and_trunk_grads(model)[0]):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("detach", [True, False])
def test_detached_value_head_trains_the_head_only(detach):
    model = tiny_gpt2()
    add_value_head(model, detach=detach)
    torch.nn.init.normal_(model.value_head.weight, std=0.1)
    awr_step(model, AWR(alpha=0.0, beta=1.0)).loss.backward()  # the value loss alone
    head, trunk = head_and_trunk_grads(model)
    assert nonzero(head)
    assert nonzero(trunk) != detach


def test_value_head_learns_from_the_value_loss():
    model = tiny_gpt2()
    add_value_head(model)
    objective = AWR(alpha=0.5, beta=1.0, max_weight=100.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        out = awr_step(model, objective)
        losses.append(out.stats["value_loss"])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    assert losses[-1] < 0.3 * losses[0]
