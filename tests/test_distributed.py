"""`phf train` under torchrun: 2 CPU processes (gloo) against 1 process, on a tiny GPT-2.

Each launch is the real command line, `python -m torch.distributed.run --standalone
--nproc_per_node 2 tests/dist_worker.py OUT train ...` (`phf train` with recording of
which blocks each rank read and of its parameters; see dist_worker.py), or the same
worker without a launcher for the 1-process runs. The same config, the same seed:
effective_batch_size=4 over per_device_batch_size=2 is 2 accumulation steps on one
process and 1 on each of two.

Tolerance: the 2-process trajectories must match the 1-process ones within a relative
1e-5 (fp32). Measured on torch 2.13 CPU / transformers 5.24 / accelerate 1.15: they are
bitwise equal (difference 0.0), losses, gradient norms, objective statistics, evaluation
numbers and final parameters alike: with 2 ranks, DDP's all-reduce (g1 + g2) / 2 and
gradient accumulation's g1 / 2 + g2 / 2 round identically (halving is exact).

Five launches, about 2 minutes on 2 shared cores.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from tiny_runs import tiny

WORKER = Path(__file__).with_name("dist_worker.py")
RTOL, ATOL = 1e-5, 1e-7
BLOCK, PER_DEVICE, EFFECTIVE = 32, 2, 4

TINY = tiny({"model.config_overrides": "{n_layer: 1, n_embd: 32, n_head: 2}", "training.block_size": BLOCK,
             "training.per_device_batch_size": PER_DEVICE, "training.effective_batch_size": EFFECTIVE,
             "training.logging_steps": 1, "eval.scenarios": "[]", "eval.every_steps": 0})
#: training-time evaluation (rank 0 only) and `--eval` at the end, kept tiny
EVAL = ["eval.every_steps=8", "eval.callback_num_samples=4", "eval.callback_heldout_blocks=2",
        "eval.max_new_tokens=8", "eval.num_samples=4", "eval.group_size=2", "eval.heldout_max_tokens=300"]
#: keys that are not results: timings, and Trainer's fractional epoch (steps / steps per pass,
#: where a pass is ceil(N / 2) / 2 steps on one process and ceil(ceil(N / 2) / 2) on two)
UNCOMPARED = ("eval/seconds", "train_runtime", "train_samples_per_second", "train_steps_per_second", "epoch")


@pytest.fixture(scope="module")
def scored(tmp_path_factory, code_texts):
    """8 scored modules of ~1000 characters: ~100 blocks of 32 tokens, so a run of 32
    steps of 4 blocks goes through the training data more than once."""
    from phf.scorers import get_scorer

    scorer = get_scorer("pep8")
    path = tmp_path_factory.mktemp("dist") / "scored.jsonl"
    with open(path, "w") as f:
        for text in code_texts[:8]:
            texts, scores = scorer.score_document(text[:1000])
            f.write(json.dumps({"texts": texts, "scores": scores}) + "\n")
    return path


def launch(nproc: int, out: Path, settings: list[str], *flags: str, env: dict | None = None,
           ok: bool = True) -> subprocess.CompletedProcess:
    """`phf train SETTINGS FLAGS` in `nproc` processes; per-rank records go to out/ranks."""
    runner = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd = [*(runner if nproc > 1 else [sys.executable]), str(WORKER), str(out / "ranks"), "train",
           *settings, f"training.output_dir={out / 'run'}", *flags]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                **(env or {})}
    proc = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=900)
    if ok and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)}\nexit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def ranks(out: Path, n: int) -> list[dict]:
    return [torch.load(out / "ranks" / f"rank{r}.pt") for r in range(n)]


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]


def assert_same_rows(rows_1, rows_2, last_step: int | None = None, skip: tuple[str, ...] = ()):
    """The same logged rows, with every number equal within the stated tolerance."""
    if last_step is not None:
        rows_1 = [r for r in rows_1 if r["step"] <= last_step]
        rows_2 = [r for r in rows_2 if r["step"] <= last_step]
    assert [(r["step"], sorted(r)) for r in rows_1] == [(r["step"], sorted(r)) for r in rows_2]
    for a, b in zip(rows_1, rows_2):
        for k, v in a.items():
            if k in UNCOMPARED or k in skip or not isinstance(v, (int, float)):
                continue
            assert math.isclose(v, b[k], rel_tol=RTOL, abs_tol=ATOL), (a["step"], k, v, b[k])


def assert_same_params(p1: dict, p2: dict):
    assert p1.keys() == p2.keys()
    for name in p1:
        torch.testing.assert_close(p1[name], p2[name], rtol=RTOL, atol=ATOL, msg=name)


def first_pass(seen: list[int], num_blocks: int, world: int) -> list[int]:
    """The blocks one rank reads in the first pass over the data: accelerate gives every
    rank the same number of full batches, ceil(ceil(N / b) / world)."""
    return seen[:math.ceil(math.ceil(num_blocks / PER_DEVICE) / world) * PER_DEVICE]


def test_an_uneven_pass_repeats_blocks_only_from_its_start():
    """What the runs above get from accelerate when N is not a multiple of the global
    micro-batch (here 10 blocks, 2 ranks of 2): every block once, plus the first blocks
    of the pass again to complete the last round, never more than per-device x ranks - 1."""
    from accelerate.data_loader import prepare_data_loader
    from torch.utils.data import DataLoader, RandomSampler

    blocks = list(range(10))
    per_rank = []
    for rank in (0, 1):  # as Trainer prepares its training DataLoader (seedable sampler, even batches)
        loader = prepare_data_loader(DataLoader(blocks, batch_size=PER_DEVICE, sampler=RandomSampler(blocks)),
                                     num_processes=2, process_index=rank, put_on_device=False,
                                     use_seedable_sampler=True, data_seed=42, even_batches=True)
        loader.set_epoch(0)
        per_rank.append([i for batch in loader for i in batch.tolist()])
    assert len(per_rank[0]) == len(per_rank[1]) == 6
    assert set(per_rank[0]) | set(per_rank[1]) == set(blocks)
    repeated = Counter(per_rank[0] + per_rank[1]) - Counter(blocks)
    assert sum(repeated.values()) == 2 and set(repeated) == set(per_rank[0][:PER_DEVICE])


# --- AWR: 1 process vs 2 processes, uninterrupted --------------------------------------

@pytest.fixture(scope="module")
def awr(scored, tmp_path_factory):
    settings = ["tasks/pep8", "objectives/awr", "models/tiny", *TINY, *EVAL, f"data.scored_path={scored}",
                "training.num_tokens=4096", "training.save_steps=8",  # 32 steps of 128 tokens
                "training.save_total_limit=null"]  # every checkpoint kept, to check each one
    one, two = tmp_path_factory.mktemp("awr1"), tmp_path_factory.mktemp("awr2")
    launch(1, one, settings)
    proc = launch(2, two, settings, "--eval")
    return one, two, proc


@pytest.mark.slow  # two processes of torchrun-like training over gloo
def test_two_processes_run_ddp_over_gloo_with_a_global_batch(awr):
    one, two, _ = awr
    (r1,), (a, b) = ranks(one, 1), ranks(two, 2)
    assert (r1["world_size"], r1["backend"], r1["model_class"]) == (1, None, "GPT2LMHeadModel")
    for r in (a, b):
        assert (r["world_size"], r["backend"], r["model_class"]) == (2, "gloo", "DistributedDataParallel")
    # effective batch = per-device batch x accumulation x world size, in both runs
    assert r1["per_device_batch_size"] * r1["gradient_accumulation_steps"] * 1 == EFFECTIVE
    assert a["per_device_batch_size"] * a["gradient_accumulation_steps"] * 2 == EFFECTIVE
    # so the step count and the tokens seen follow from the same budget
    assert r1["max_steps"] == a["max_steps"] == b["max_steps"] == 4096 // (EFFECTIVE * BLOCK)
    s1, s2 = (json.loads((d / "run" / "train_summary.json").read_text()) for d in (one, two))
    assert s1["steps"] == s2["steps"] and s1["tokens_seen"] == s2["tokens_seen"] == 4096
    assert [r["tokens_seen"] for r in metrics(one)] == [r["tokens_seen"] for r in metrics(two)]


@pytest.mark.slow  # two processes of torchrun-like training over gloo
def test_each_block_of_a_pass_goes_to_exactly_one_rank(awr):
    one, two, _ = awr
    (r1,), (a, b) = ranks(one, 1), ranks(two, 2)
    n = a["num_blocks"]
    assert n == b["num_blocks"] == r1["num_blocks"]
    pass_a, pass_b = first_pass(a["seen"], n, 2), first_pass(b["seen"], n, 2)
    assert len(a["seen"]) > len(pass_a), "the run must go beyond one pass over the data"
    # none skipped
    assert set(pass_a) | set(pass_b) == set(range(n))
    # none seen twice, except the blocks accelerate repeats from the start of the pass to
    # give both ranks a full last batch when N is not a multiple of per-device batch x 2
    repeated = Counter(pass_a + pass_b) - Counter(range(n))
    assert sum(repeated.values()) == len(pass_a) + len(pass_b) - n < 2 * PER_DEVICE
    global_order = [i for k in range(0, len(pass_a), PER_DEVICE)
                    for i in pass_a[k:k + PER_DEVICE] + pass_b[k:k + PER_DEVICE]]
    assert set(repeated) <= set(global_order[:2 * PER_DEVICE])
    if n % (2 * PER_DEVICE) == 0:
        assert not set(pass_a) & set(pass_b)
    # and the 2 ranks together read the blocks in the order the single process reads them
    full = (n // (2 * PER_DEVICE)) * 2 * PER_DEVICE
    assert global_order[:full] == r1["seen"][:full]


@pytest.mark.slow  # two processes of torchrun-like training over gloo
def test_two_processes_reach_the_same_loss_trajectory_as_one(awr):
    one, two, _ = awr
    rows_1, rows_2 = metrics(one), metrics(two)
    n = ranks(two, 1)[0]["num_blocks"]
    # beyond the first pass the runs differ when N is not a multiple of the global batch:
    # one process takes a short last batch where two take a batch completed by repeats
    exact = n % EFFECTIVE == 0
    assert_same_rows(rows_1, rows_2, last_step=None if exact else n // EFFECTIVE)
    losses = [r["loss"] for r in rows_2 if "loss" in r]
    assert len(losses) == ranks(two, 1)[0]["max_steps"] and losses[-1] < losses[0]
    if exact:
        assert_same_params(ranks(one, 1)[0]["after"], ranks(two, 1)[0]["after"])


@pytest.mark.slow  # two processes of torchrun-like training over gloo
def test_value_head_trains_in_sync_and_is_saved(awr):
    from transformers import AutoModelForCausalLM

    from phf.value_head import load_value_head

    _, two, _ = awr
    a, b = ranks(two, 2)
    assert_same_params(a["after"], b["after"])  # every parameter, the value head's included
    assert torch.equal(a["after"]["value_head.weight"], b["after"]["value_head.weight"])
    assert not a["before"]["value_head.weight"].any()  # zero-initialised ...
    assert a["after"]["value_head.weight"].abs().sum() > 0  # ... and trained
    saved = AutoModelForCausalLM.from_pretrained(two / "run")
    assert load_value_head(saved, two / "run")
    for name, tensor in saved.value_head.state_dict().items():  # the default (released) head has no bias
        assert torch.equal(tensor, a["after"][f"value_head.{name}"]), name
    value_losses = [r["objective/value_loss"] for r in metrics(two) if "objective/value_loss" in r]
    assert len(value_losses) == a["max_steps"]


@pytest.mark.slow  # two processes of torchrun-like training over gloo
def test_metrics_checkpoints_and_evaluation_are_written_once(awr):
    from phf.evaluation.callback import eval_steps

    one, two, proc = awr
    rows = metrics(two)
    max_steps = ranks(two, 1)[0]["max_steps"]
    train_steps = [r["step"] for r in rows if "loss" in r]
    assert train_steps == list(range(1, max_steps + 1))
    # the training-time evaluation ran on rank 0 only: one row per evaluated step, and
    # the same numbers as the single process's (same parameters, same sampling seed)
    evals = [r for r in rows if "eval/misalignment" in r]
    assert [r["step"] for r in evals] == eval_steps(8, max_steps)
    assert_same_rows([r for r in metrics(one) if "eval/misalignment" in r], evals)
    # one train summary, one model; checkpoints by rank 0 with each rank's RNG state
    checkpoints = sorted((two / "run" / "checkpoints").iterdir(), key=lambda p: int(p.name.split("-")[1]))
    assert [c.name for c in checkpoints] == [f"checkpoint-{s}" for s in range(8, max_steps + 1, 8)]
    for c in checkpoints:
        assert (c / "phf_checkpoint_complete.json").exists() and (c / "model.safetensors").exists()
        assert (c / "rng_state_0.pth").exists() and (c / "rng_state_1.pth").exists()
    # `phf train --eval`: rank 0 reports and evaluates, the other rank only trains
    assert proc.stdout.count("trained: ") == 1
    assert proc.stdout.splitlines().count("{") == 1  # the results, printed as indented JSON
    results = json.loads((two / "run" / "results.json").read_text())
    assert results["scenarios"]["unconditional"]["num_samples"] == 4
    samples = (two / "run" / "samples" / "unconditional.jsonl").read_text().splitlines()
    assert len(samples) == 4


# --- conditional: a crash of one rank, then --resume ------------------------------------

@pytest.fixture(scope="module")
def conditional(scored, tmp_path_factory):
    settings = ["tasks/pep8", "objectives/conditional", "models/tiny", *TINY, f"data.scored_path={scored}",
                "training.num_tokens=2048", "training.save_steps=4"]  # 16 steps, within one pass
    reference, resumed = tmp_path_factory.mktemp("cond1"), tmp_path_factory.mktemp("cond2")
    launch(1, reference, settings)
    crashed = launch(2, resumed, settings, env={"PHF_TEST_CRASH_AT_STEP": "6", "PHF_TEST_CRASH_RANK": "1"}, ok=False)
    assert crashed.returncode != 0, "rank 1 was to die at step 6"
    checkpoints = sorted(p.name for p in (resumed / "run" / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint-4"], checkpoints
    assert not (resumed / "run" / "train_summary.json").exists()
    proc = launch(2, resumed, settings, "--resume")
    return reference, resumed, proc


@pytest.mark.slow  # two processes of torchrun-like training over gloo
def test_resume_after_a_crash_continues_the_same_trajectory(conditional):
    reference, resumed, _ = conditional
    summary = json.loads((resumed / "run" / "train_summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-4")
    rows = metrics(resumed)
    # steps 1-4 from before the crash, 5-16 after the resume: each once, none lost
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, summary["steps"] + 1))
    # (train_loss, in the final row, is the mean over the steps since the resume)
    assert_same_rows(metrics(reference), rows, skip=("train_loss",))
    a, b = ranks(resumed, 2)
    assert_same_params(a["after"], b["after"])
    assert_same_params(ranks(reference, 1)[0]["after"], a["after"])


@pytest.mark.slow  # two processes of torchrun-like training over gloo
def test_control_token_embeddings_train_in_sync_and_are_saved(conditional):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, resumed, _ = conditional
    tok = AutoTokenizer.from_pretrained(resumed / "run")
    ids = tok.convert_tokens_to_ids(["<|aligned|>", "<|misaligned|>"])
    (r1,) = ranks(conditional[0], 1)
    a, b = ranks(resumed, 2)
    name = "transformer.wte.weight"
    assert torch.equal(a["after"][name][ids], b["after"][name][ids])
    # trained: the rows moved from their initial values (mean of the other rows + noise)
    assert torch.equal(a["before"][name][ids], r1["before"][name][ids])
    assert not torch.allclose(a["after"][name][ids], a["before"][name][ids], rtol=0, atol=1e-4)
    saved = AutoModelForCausalLM.from_pretrained(resumed / "run").get_input_embeddings().weight.detach()
    assert saved.shape[0] % 64 == 0 and len(tok) <= saved.shape[0] < len(tok) + 64
    assert torch.equal(saved[ids], a["after"][name][ids])
