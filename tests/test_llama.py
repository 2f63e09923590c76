"""Llama-style presets (llama-tiny, llama-small) through every part of phf: the stated
sizes, all six objectives, control tokens in a padded vocabulary, the AWR value head,
sampling with its KV cache and positions, `phf eval`, resume, and (slow) DDP.

The runs use `models/llama-tiny` shrunk to 2 layers x 32 wide, with the tiny-run
settings of tests/tiny_runs.py.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from tiny_runs import scored_corpus, tiny, tiny_tokenizer

from phf.cli import main
from phf.config import ModelConfig, load_config
from phf.model import build_model, count_parameters, padding_token_ids

#: llama-tiny's shape, shrunk: 2 layers, 32 wide, 2 heads, SwiGLU 64 wide
SHRUNK = "{num_hidden_layers: 2, hidden_size: 32, num_attention_heads: 2, intermediate_size: 64}"
LLAMA = tiny({"model.config_overrides": SHRUNK, "training.logging_steps": 1, "training.num_tokens": 4096})
OBJECTIVES = ["mle", "filtering", "conditional", "unlikelihood", "rwr", "awr"]


def llama_config(scored, out, objective: str, extra: list[str] = ()):
    return load_config(["tasks/pep8", f"objectives/{objective}", "models/llama-tiny"],
                       [*LLAMA, f"data.scored_path={scored}", f"training.output_dir={out}", *extra])


def losses(run) -> list[float]:
    return [m["loss"] for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in m]


@pytest.fixture(scope="module")
def scored(tmp_path_factory, code_texts):
    return scored_corpus(tmp_path_factory.mktemp("llama") / "scored.jsonl", code_texts, num_docs=8)


@pytest.fixture(scope="module")
def runs(scored, tmp_path_factory):
    """One trained llama run per objective (8 steps of 8 x 64 tokens each)."""
    from phf.train import train

    base = tmp_path_factory.mktemp("llama-runs")
    return {name: train(llama_config(scored, base / name, name)) for name in OBJECTIVES}


@pytest.mark.parametrize("preset,vocab,block,params,non_embedding,gpt2", [
    ("llama-tiny", 4096, 256, 2_557_632, 1_771_200, "tiny"),
    ("llama-small", 16384, 512, 16_913_280, 10_621_824, "small")])
def test_presets_are_llama_style_at_the_size_of_their_gpt2_preset(preset, vocab, block, params, non_embedding,
                                                                    gpt2):
    """The parameter counts stated in phf/model.py, configs/models and docs/."""
    model = build_model(ModelConfig(preset=preset), vocab, block)
    config = model.config
    assert type(model).__name__ == "LlamaForCausalLM" and config.hidden_act == "silu"
    assert config.max_position_embeddings == block and config.tie_word_embeddings
    assert not any(name.endswith(".bias") for name, _ in model.named_parameters())  # no biases
    assert type(model.model.norm).__name__ == "LlamaRMSNorm"
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert count_parameters(model) == params and count_parameters(model, non_embedding=True) == non_embedding
    reference = build_model(ModelConfig(preset=gpt2), vocab, block)
    assert abs(count_parameters(model) / count_parameters(reference) - 1) < 0.025
    assert abs(non_embedding / count_parameters(reference, non_embedding=True) - 1) < 0.005


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_every_objective_trains_a_llama(runs, objective):
    from transformers import AutoModelForCausalLM

    run = runs[objective]
    loss = losses(run)
    assert len(loss) == 8 and all(math.isfinite(x) for x in loss)
    assert loss[-1] < loss[0]  # every objective's loss falls in these 8 steps (seed 42)
    if objective in ("mle", "filtering", "conditional"):  # the plain LM loss, from ~ln(300): by ~0.1 here
        assert loss[-1] < loss[0] - 0.05
    model = AutoModelForCausalLM.from_pretrained(run)
    assert type(model).__name__ == "LlamaForCausalLM"
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["objective"] == objective and summary["tokens_seen"] >= 4096


def test_control_tokens_fit_the_padded_vocabulary_and_are_never_sampled_as_misaligned(runs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from phf.evaluation.sampling import generate_samples

    run = runs["conditional"]
    model, tok = AutoModelForCausalLM.from_pretrained(run), AutoTokenizer.from_pretrained(run)
    rows = model.get_input_embeddings().weight.shape[0]
    assert rows % 64 == 0 and len(tok) <= rows < len(tok) + 64
    ids = tok.convert_tokens_to_ids(["<|aligned|>", "<|misaligned|>"])
    assert max(ids) < len(tok) and padding_token_ids(model, tok) == list(range(len(tok), rows))
    # the control rows were trained away from their start (the mean of the rows + 0.01 noise)
    embeddings = model.get_input_embeddings().weight.detach()
    assert (embeddings[ids] - embeddings[:ids[0]].mean(dim=0)).abs().max() > 0.03
    texts = generate_samples(model, tok, 8, max_new_tokens=24, prefix_text="<|aligned|>",
                             forbidden_texts=["<|misaligned|>"], skip_special_tokens=False, progress=False)
    assert not any("<|misaligned|>" in t for t in texts)


def test_new_tokens_beyond_the_padding_grow_the_tied_llama_matrix():
    from phf.model import resize_for_new_tokens

    torch.manual_seed(0)
    model = build_model(ModelConfig(preset="llama-tiny", config_overrides={"num_hidden_layers": 1},
                                    pad_vocab_to_multiple_of=1), 100, 32)
    before = model.get_input_embeddings().weight.detach().clone()
    assert resize_for_new_tokens(model, 130, old_vocab_size=100, pad_to_multiple_of=64) == 30
    weight = model.get_input_embeddings().weight
    assert weight.shape == (192, 192) and model.get_output_embeddings().weight is weight  # still one matrix
    assert torch.equal(weight[:100], before)
    assert (weight[100:130] - before.mean(dim=0)).abs().max() < 0.05  # the mean + small noise


def test_awr_value_head_reads_the_llama_hidden_state_and_is_saved(runs):
    from transformers import AutoModelForCausalLM

    from phf.value_head import load_value_head

    run = runs["awr"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("objective/value_loss" in r for r in rows)
    model = AutoModelForCausalLM.from_pretrained(run).eval()
    assert load_value_head(model, run) and model.value_head.weight.abs().sum() > 0  # zero at the start: trained
    ids = torch.tensor([[0, 5, 9, 11, 40]])
    out = model(input_ids=ids, output_hidden_states=True)
    assert out.token_values.shape == (1, 5) and bool(((out.token_values > -1) & (out.token_values < 0)).all())
    expected = -torch.sigmoid(out.hidden_states[-1] @ model.value_head.weight.T).squeeze(-1)
    torch.testing.assert_close(out.token_values, expected)


def test_decoding_matches_generate_on_left_padded_prompts(code_texts):
    """test_sampling's check on a Llama: greedy (a one-token nucleus) in one left-padded
    batch = generate on each prompt alone, so rotary positions, mask and KV cache are right."""
    from test_sampling import test_decoding_matches_generate_on_left_padded_prompts as check
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer(code_texts[:20])
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=96,
                                         bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                                         tie_word_embeddings=True)).eval()
    check((model, tok))


def test_phf_eval_on_a_llama_run(runs):
    run = runs["conditional"]
    assert main(["eval", str(run)]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["scenarios"]["unconditional"]["num_samples"] == 10
    assert results["misalignment"] >= 0 and math.isfinite(results["heldout_loss"]) and results["heldout_loss"] > 0
    samples = [json.loads(x) for x in (run / "samples" / "unconditional.jsonl").read_text().splitlines()]
    assert len(samples) == 10 and not any("<|" in s["text"] for s in samples)


class _Crash(Exception):
    pass


def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(scored, tmp_path, monkeypatch):
    """A run that stops after step 6 (its last checkpoint: step 4), resumed, ends bitwise
    where the uninterrupted run ends (CPU, one thread)."""
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from phf.train import train
    from phf.trainer import PHFTrainer

    extra = ["training.save_steps=4", "training.bf16=false"]
    reference = train(llama_config(scored, tmp_path / "ref", "conditional", extra))

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 6:
                raise _Crash

    original = PHFTrainer.train

    def crashing(self, *args, **kwargs):
        self.add_callback(StopAt())
        return original(self, *args, **kwargs)

    cfg = llama_config(scored, tmp_path / "run", "conditional", extra)
    monkeypatch.setattr(PHFTrainer, "train", crashing)
    with pytest.raises(_Crash):
        train(cfg)
    monkeypatch.setattr(PHFTrainer, "train", original)
    run = train(cfg, resume=True)
    assert json.loads((run / "train_summary.json").read_text())["resumed_from"].endswith("checkpoint-4")
    assert len(losses(run)) == 8 and losses(run) == losses(reference)  # steps 1-6, then 5-8 again: each once
    a, b = load_file(reference / "model.safetensors"), load_file(run / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # two processes of torchrun-like training over gloo
def test_two_processes_train_a_llama_as_one(scored, tmp_path):
    """AWR (the value head) on llama-tiny: 2 DDP processes, 1 process, same trajectory."""
    from test_distributed import TINY, assert_same_params, assert_same_rows, launch, metrics, ranks

    settings = ["tasks/pep8", "objectives/awr", "models/llama-tiny", *TINY, f"model.config_overrides={SHRUNK}",
                f"data.scored_path={scored}", "training.num_tokens=1024"]  # 8 steps of 4 x 32
    one, two = tmp_path / "one", tmp_path / "two"
    launch(1, one, settings)
    launch(2, two, settings)
    rows_1, rows_2 = metrics(one), metrics(two)
    n = ranks(two, 1)[0]["num_blocks"]
    assert n >= 32  # every step within the first pass, where the two runs read the same blocks
    assert_same_rows(rows_1, rows_2)
    a, b = ranks(two, 2)
    assert_same_params(a["after"], b["after"])
    assert_same_params(ranks(one, 1)[0]["after"], a["after"])
    assert a["after"]["value_head.weight"].abs().sum() > 0


def test_phf_sweep_runs_on_llama_tiny(tmp_path):
    """`phf sweep --model llama-tiny`, as the findings comparison runs it, shrunk: two
    objectives, two seeds, the report with intervals over seeds."""
    settings = tiny({"model.config_overrides": SHRUNK, "training.block_size": 32, "training.effective_batch_size": 4,
                     "training.num_tokens": 512, "eval.num_samples": 6, "eval.max_new_tokens": 8,
                     "eval.group_size": 3, "eval.heldout_max_tokens": 500, "data.max_bytes": 60000})
    out = tmp_path / "sweep"
    assert main(["sweep", "--task", "pep8", "--model", "llama-tiny", "--objectives", "mle,conditional",
                 "--finetune", "none", "--seeds", "42,43", "--out", str(out), *settings]) == 0
    runs = [out / name / f"seed-{seed}" for name in ("mle", "conditional") for seed in (42, 43)]
    for run in runs:
        assert "preset: llama-tiny" in (run / "config.yaml").read_text()
        assert json.loads((run / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
        assert json.loads((run / "results.json").read_text())["heldout_loss"] > 0
    assert "| conditional |" in (out / "report.md").read_text()
