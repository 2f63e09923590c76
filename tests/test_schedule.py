"""Objective schedules inside one run (`objective.name: schedule`): the phase switches at
its step with one optimizer and one learning-rate schedule, each phase trains on its
own blocks, a resume in any phase ends where an uninterrupted run ends, every log names
its phase, and bad schedules are refused at config time with the key named."""

import json

import pytest
import torch
from safetensors.torch import load_file

from test_reliability_training import scored  # noqa: F401  (the fixture: 6 modules, every third line misaligned)
from tiny_runs import tiny

from phf.config import load_config
from phf.errors import ConfigError
from phf.tokenizer import ALIGNED, MISALIGNED, load_tokenizer
from phf.trainer import PHFTrainer

# 20 optimizer steps of 8 x 32 tokens; the second phase starts at step 10 (0-based)
TINY = tiny({"training.block_size": 32, "training.num_tokens": 5120, "training.save_steps": 4,
             "training.logging_steps": 3, "training.warmup_ratio": 0.1, "training.bf16": "false",
             "data.heldout_fraction": 0.05})
MLE_THEN_CONDITIONAL = "objective={name: schedule, phases: [{start: 0, objective: {name: mle}}, " \
                       "{start: 0.5, objective: {name: conditional, drop_token_fraction: 0}}]}"


def _config(scored, run, schedule=MLE_THEN_CONDITIONAL, extra=()):
    return load_config(["tasks/pep8", "models/tiny"],
                       [*TINY, schedule, f"data.scored_path={scored}", f"training.output_dir={run}", *extra])


def _rows(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_phases_switch_at_their_step_with_one_optimizer(tmp_path, scored, monkeypatch):
    from phf.train import train

    seen = []  # per micro-step: (steps done, loss, token ids of the batch, optimizer steps taken)
    compute_loss = PHFTrainer.compute_loss

    def recording(self, model, inputs, *args, **kwargs):
        state = [s["step"] for s in self.optimizer.state.values() if "step" in s]
        seen.append((self.state.global_step, self.schedule.names[self.phase], inputs["input_ids"].clone(),
                     int(max(state)) if state else 0))
        return compute_loss(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(PHFTrainer, "compute_loss", recording)
    run = train(_config(scored, tmp_path / "run"))
    tok = load_tokenizer(str(run))
    controls = torch.tensor([tok.convert_tokens_to_ids(t) for t in (ALIGNED, MISALIGNED)])
    seen = [(s, name, bool(torch.isin(ids, controls).any()), opt) for s, name, ids, opt in seen]
    assert {s: name for s, name, _, _ in seen} == {s: "mle" if s < 10 else "conditional" for s in range(20)}

    steps = sorted({s for s, *_ in seen})
    assert steps == list(range(20))
    # every sequence of steps 0-9 comes from the MLE blocks (no control token in any), of 10-19
    # from the conditional ones (with drop_token_fraction 0, every block has some)
    assert all(not has for s, _, has, _ in seen if s < 10) and all(has for s, _, has, _ in seen if s >= 10)
    # the optimizer is not rebuilt at the switch: at step 10 it has taken 10 steps (Adam's step count)
    assert {opt for s, _, _, opt in seen if s == 10} == {10}

    rows = _rows(run)
    losses = [r for r in rows if "loss" in r]
    assert {r["step"]: r["phase"] for r in losses} == {r["step"]: int(r["step"] > 10) for r in losses}
    assert 10 in {r["step"] for r in losses}  # a log closes the first phase (logging_steps is 3)
    assert {r["phase_objective"] for r in losses} == {"mle", "conditional"}
    # one learning-rate schedule over the whole run: after the warm-up it only decreases, across the switch
    lrs = [r["learning_rate"] for r in losses if r["step"] >= 3]
    assert lrs == sorted(lrs, reverse=True) and len(set(lrs)) == len(lrs)

    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["objective"] == "mle>conditional@0.5"
    assert [(p["objective"], p["first_step"], p["last_step"]) for p in summary["schedule"]] == \
        [("mle", 1, 10), ("conditional", 11, 20)]
    assert summary["control_tokens_added"] == 2
    # the MLE phase's blocks are in data/phase-0; the last phase's (the held-out split too) in data/
    assert json.loads((run / "data" / "phase-0" / "pack.json").read_text())["spec"]["objective"] == "mle"
    assert json.loads((run / "data" / "pack.json").read_text())["spec"]["objective"] == "conditional"


class _Interrupted(Exception):
    pass


@pytest.mark.parametrize("stop_at", [6, 14], ids=["resume-in-phase-0", "resume-in-phase-1"])
def test_resume_in_either_phase_ends_where_an_uninterrupted_run_ends(tmp_path, scored, monkeypatch, stop_at):
    from phf.train import train

    per_step = ["training.logging_steps=1"]  # a logged loss averages the steps since the last log
    ref = train(_config(scored, tmp_path / "ref", extra=per_step))
    training_step = PHFTrainer.training_step

    def stopping(self, *args, **kwargs):
        if self.state.global_step == stop_at:
            raise _Interrupted
        return training_step(self, *args, **kwargs)

    monkeypatch.setattr(PHFTrainer, "training_step", stopping)
    cfg = _config(scored, tmp_path / "run", extra=per_step)
    with pytest.raises(_Interrupted):
        train(cfg)
    monkeypatch.setattr(PHFTrainer, "training_step", training_step)
    run = train(cfg, resume=True)

    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["resumed_from"].endswith(f"checkpoint-{stop_at - stop_at % 4}")
    loss = {r["step"]: (r["loss"], r["phase"]) for r in _rows(run) if "loss" in r}
    assert loss == {r["step"]: (r["loss"], r["phase"]) for r in _rows(ref) if "loss" in r}
    assert sorted(loss) == list(range(1, 21)) and {p for _, p in loss.values()} == {0, 1}
    a, b = load_file(ref / "model.safetensors"), load_file(run / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bitwise, on CPU


def _phases(*phases) -> str:
    return "objective=" + json.dumps({"name": "schedule", "phases": [{"start": s, "objective": o} for s, o in phases]})


@pytest.mark.parametrize("schedule, message", [
    (_phases((0.1, {"name": "mle"}), (0.5, {"name": "conditional"})),
     "objective.phases[0].start: the first phase starts at 0, got 0.1"),
    (_phases((0, {"name": "mle"}), (0.6, {"name": "conditional"}), (0.3, {"name": "mle"})),
     "objective.phases[2].start: starts must increase, got 0.3 after 0.6"),
    (_phases((0, {"name": "mle"}), (1.0, {"name": "conditional"})),
     "objective.phases[1].start: input should be less than 1, got 1.0"),
    (_phases((0, {"name": "mle"}), (0.5, {"name": "conditionl"})),
     "objective.phases[1].objective: 'conditionl' is not one of mle, filtering, conditional"),
    (_phases((0, {"name": "mle"}), (0.5, {"name": "schedule"})),
     "objective.phases[1].objective: 'schedule' is not one of"),
    # 20 steps: a phase from 0.99 starts at step 20, the end of the run
    (_phases((0, {"name": "mle"}), (0.99, {"name": "conditional"})),
     "objective.phases[1].start: the phase from 0.99 covers no optimizer step of the run's 20"),
    (_phases((0, {"name": "mle"}), (0.5, {"name": "conditional", "drop_token_fraction": 2})),
     "objective.phases[1].objective.drop_token_fraction: input should be less than or equal to 1"),
    (_phases((0, {"name": "mle"}), (0.5, {"name": "conditional", "alpha": 1})),
     "unknown config key 'objective.phases[1].objective.alpha' (objective 'conditional' takes:"),
    (_phases((0, {"name": "mle"}), (0.5, {"name": "unlikelihood", "alpa": 1})),
     "did you mean 'objective.phases[1].objective.alpha'?"),
    (_phases((0, {"name": "filtering", "threshold": 0.1, "percentile": 5}), (0.5, {"name": "mle"})),
     "objective.phases[0].objective.percentile: set either objective.threshold or objective.percentile"),
    (_phases((0, {"name": "mle"}), (0.5, {"name": "conditional", "attributes": ["pii"]})),
     "objective.phases[1].objective.attributes: 'pii' is not one of task.attributes"),
])
def test_bad_schedules_are_refused_at_config_time_with_the_key(tmp_path, scored, schedule, message):
    with pytest.raises(ConfigError) as e:
        _config(scored, tmp_path / "run", schedule)
    assert message in str(e.value)
    assert not (tmp_path / "run").exists()


def test_a_phase_too_short_for_the_launchs_replicas_is_refused_before_packing(tmp_path, scored, monkeypatch):
    """Config time counts steps of training.effective_batch_size (20 here); 3 replicas of 4
    sequences take 12 per step, so the run has 14 steps and the phase from 0.97 none."""
    from phf.train import train

    cfg = _config(scored, tmp_path / "run", _phases((0, {"name": "mle"}), (0.97, {"name": "conditional"})))
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ConfigError, match=r"objective.phases\[1\].start: the phase from 0.97 covers no optimizer "
                                          "step of the run's 14"):
        train(cfg)
    assert not (tmp_path / "run" / "data").exists()


def test_a_schedule_on_phf_pack_shards_is_refused(tmp_path, scored):
    with pytest.raises(ConfigError, match="data.packed_path: a schedule packs each phase's blocks"):
        _config(scored, tmp_path / "run", extra=[f"data.packed_path={tmp_path}"])


def test_a_cooldown_phase_inserts_no_control_token(tmp_path, scored):
    """Conditional training, then a 10% cooldown in which no control token is inserted
    (conditional with drop_token_fraction 1): the cooldown's blocks have none, and the
    config round-trips through the run's config.yaml."""
    from phf.data.packing import PackedDataset
    from phf.train import pack_phases, plan_steps, run_tokenizer, add_run_tokens
    from phf.runfiles import RunFiles

    cooldown = _phases((0, {"name": "conditional"}), (0.9, {"name": "conditional", "drop_token_fraction": 1.0}))
    cfg = _config(scored, tmp_path / "run", cooldown)
    files = RunFiles(tmp_path / "run")
    tok = run_tokenizer(cfg, files, resume=False, is_main=True, on_bad="error")
    assert add_run_tokens(cfg, tok, [p.objective for p in cfg.objective.phases]) == 2
    phases = pack_phases(cfg, tok, plan_steps(cfg.training), files, is_main=True, on_bad="error")
    assert [p.first_step for p in phases] == [0, 18]
    assert [p.data_dir for p in phases] == [files.data / "phase-0", files.data]
    controls = {tok.convert_tokens_to_ids(t) for t in (ALIGNED, MISALIGNED)}
    ids = [set(PackedDataset(p.data_dir, "train").ids.ravel().tolist()) for p in phases]
    assert ids[0] & controls and not ids[1] & controls
    cfg.save(tmp_path / "config.yaml")
    assert load_config([str(tmp_path / "config.yaml")]) == cfg


def test_sweep_start_at_runs_each_start_point_and_reports_the_timing(tmp_path):
    from tiny_runs import tiny_sweep

    from phf.sweep import plan, run_sweep

    runs = plan(("conditional",), start_at=[0, 0.5])
    assert [(r.name, r.start_at) for r in runs] == [("mle", None), ("conditional@0", 0), ("conditional@0.5", 0.5)]
    # 4 steps of 4 x 32 tokens: the second phase from step 2
    report = run_sweep("pep8", tmp_path, objectives=("conditional",), finetune="conditional", start_at=[0, 0.5],
                       overrides=tiny_sweep({"data.max_bytes": 60000}))
    scheduled = json.loads((tmp_path / "conditional@0.5" / "train_summary.json").read_text())
    assert scheduled["objective"] == "mle>conditional@0.5"
    assert [(p["objective"], p["first_step"]) for p in scheduled["schedule"]] == [("mle", 1), ("conditional", 3)]
    plain = json.loads((tmp_path / "conditional@0" / "train_summary.json").read_text())
    assert plain["objective"] == "conditional" and "schedule" not in plain
    assert plain["tokens_seen"] == scheduled["tokens_seen"]

    timing = report.split("## Intervention timing")[1].split("\n## ")[0]
    rows = [line.split(" | ")[:4] for line in timing.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [(r[0].strip("| "), r[2], r[3]) for r in rows] == [
        ("conditional@0", "0", "the objective from the first token"),
        ("conditional@0.5", "0.5", "MLE, then the objective (one run)"),
        ("mle+conditional-finetune", "0.5", "MLE, then finetuning (new optimizer)")]
    assert "conditional@0.5: conditional from 0.5" in report  # the curves mark the switch


def test_sweep_start_at_refuses_an_unknown_objective_before_reading_data(tmp_path, capsys):
    from phf.cli import main

    assert main(["sweep", "--start-at", "0,0.2", "--objectives", "conditonal", "--out", str(tmp_path / "s")]) == 2
    assert "--objectives: 'conditonal' is not an objective" in capsys.readouterr().err
    assert main(["sweep", "--start-at", "0,0.2", "--finetune", "nope", "--out", str(tmp_path / "s")]) == 2
    assert main(["sweep", "--start-at", "0.2,0.2", "--out", str(tmp_path / "s")]) == 2
    assert "--start-at '0.2,0.2': expected distinct fractions" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("name, label", [("mle-then-conditional", "mle>conditional@0.2"),
                                         ("conditional-cooldown", "conditional>conditional@0.9")])
def test_the_schedule_configs_load_and_phf_config_documents_the_phases(name, label):
    from phf.config import describe

    cfg = load_config(["tasks/pep8", f"objectives/{name}", "models/tiny"])
    assert cfg.objective.label() == label
    assert "each {start, objective}: start, a fraction of training.num_tokens" in describe(cfg)


@pytest.mark.slow  # two processes of torchrun-like training over gloo
def test_a_schedule_under_ddp_follows_the_one_process_trajectory(tmp_path, scored):
    """MLE, then AWR (its value head unused in the first phase) on 2 processes: each step
    takes its global batch from its own phase, so the losses and the final weights are
    those of 1 process, and the switch is at the same step."""
    from test_distributed import TINY as DIST, assert_same_params, assert_same_rows, launch, metrics, ranks

    schedule = _phases((0, {"name": "mle"}), (0.5, {"name": "awr", "alpha": 0.5, "beta": 1.0}))
    settings = ["tasks/pep8", "models/tiny", *DIST, schedule, f"data.scored_path={scored}",
                "training.num_tokens=2048"]  # 16 steps of 4 x 32 tokens
    one, two = tmp_path / "one", tmp_path / "two"
    launch(1, one, settings)
    launch(2, two, settings)
    rows_1, rows_2 = metrics(one), metrics(two)
    assert_same_rows(rows_1, rows_2)
    assert {r["step"]: r["phase"] for r in rows_2 if "loss" in r} == {s: int(s > 8) for s in range(1, 17)}
    assert all("objective/value_loss" in r for r in rows_2 if "loss" in r and r["step"] > 8)
    assert_same_params(ranks(one, 1)[0]["after"], ranks(two, 1)[0]["after"])


def test_phf_pack_refuses_a_schedule(tmp_path, scored, capsys):
    from phf.cli import main

    assert main(["pack", "tasks/pep8", "models/tiny", MLE_THEN_CONDITIONAL, f"data.scored_path={scored}",
                 f"tokenizer.path={tmp_path}", "-o", str(tmp_path / "packed")]) == 2
    assert "objective.name: phf pack packs one objective's blocks" in capsys.readouterr().err
    assert not (tmp_path / "packed").exists()


def test_filtering_then_mle_filters_the_first_phase_only(tmp_path, scored):
    from phf.runfiles import RunFiles
    from phf.train import pack_phases, plan_steps, run_tokenizer

    cfg = _config(scored, tmp_path / "run", _phases((0, {"name": "filtering", "percentile": 50}),
                                                      (0.5, {"name": "mle"})))
    files = RunFiles(tmp_path / "run")
    tok = run_tokenizer(cfg, files, resume=False, is_main=True, on_bad="error")
    phases = pack_phases(cfg, tok, plan_steps(cfg.training), files, is_main=True, on_bad="error")
    stats = [json.loads((p.data_dir / "pack.json").read_text())["stats"] for p in phases]
    assert stats[0]["filtered_documents"] > 0 and stats[1]["filtered_documents"] == 0
    assert len(phases[0].data) < len(phases[1].data)


@pytest.mark.parametrize("objective, pair", [
    ("objectives/mle-then-conditional", True), ("objectives/conditional-cooldown", True),
    ("objectives/conditional", True), ("objectives/mle", False), ("objectives/conditional-quantiles", False)])
def test_the_decoding_sweep_sees_the_tag_pair_of_a_schedule(objective, pair):
    from phf.decode_sweep import has_tag_pair

    assert has_tag_pair(load_config(["tasks/pep8", objective, "models/tiny"])) is pair


def test_the_model_card_names_the_control_tokens_of_a_conditional_phase():
    from phf.card import control_tokens

    for name, tokens in [("mle-then-conditional", ([ALIGNED], [MISALIGNED])), ("mle", ([], []))]:
        cfg = load_config(["tasks/pep8", f"objectives/{name}", "models/tiny"])
        assert control_tokens(cfg.to_dict()) == tokens


def test_a_sweep_takes_objective_configs_by_name(tmp_path):
    from phf.sweep import SweepRun, check_objective_names, run_config

    check_objective_names(("mle", "conditional-cooldown", "conditional-quantiles"), "conditional")
    cfg = run_config("pep8", tmp_path, SweepRun("conditional-cooldown", "conditional-cooldown"))
    assert cfg.objective.label() == "conditional>conditional@0.9"
    with pytest.raises(ConfigError, match="--objectives: 'conditional-cooldwn' is not an objective"):
        check_objective_names(("conditional-cooldwn",))


# issue 24's bad inputs, as `phf train` meets them: exit status 2, one line naming the key,
# and nothing read or written (the scored corpus does not exist, so reading it would fail otherwise)
@pytest.mark.parametrize("objective, message", [
    (_phases((0, {"name": "mle"}), (0.6, {"name": "conditional"}), (0.3, {"name": "mle"})),
     "objective.phases[2].start: starts must increase, got 0.3 after 0.6"),
    (_phases((0, {"name": "mle"}), (-0.5, {"name": "conditional"})),
     "objective.phases[1].start: input should be greater than or equal to 0, got -0.5"),
    (_phases((0, {"name": "mle"}), (1.5, {"name": "conditional"})),
     "objective.phases[1].start: input should be less than 1, got 1.5"),
    (_phases((0, {"name": "mle"}), (0.5, {"name": "nope"})), "objective.phases[1].objective: 'nope' is not one of"),
    (_phases((0, {"name": "mle"}), (0.99, {"name": "conditional"})),
     "objective.phases[1].start: the phase from 0.99 covers no optimizer step of the run's 20"),
    ("objective={name: conditional, conditioning: quantiles, quantiles: 1}",
     "objective.quantiles: 1 buckets cannot separate better from worse segments; give at least 2"),
    (_phases((0, {"name": "mle"}), (0.5, {"name": "conditional", "conditioning": "quantiles", "quantiles": 0})),
     "objective.phases[1].objective.quantiles: 0 buckets cannot"),
    ("objective={name: mle, conditioning: quantiles}", "unknown config key 'objective.conditioning' (objective 'mle'"),
    (_phases((0, {"name": "filtering", "conditioning": "score-text"}), (0.5, {"name": "conditional"})),
     "unknown config key 'objective.phases[0].objective.conditioning' (objective 'filtering'"),
])
def test_phf_train_refuses_issue_24s_bad_inputs_in_one_line_before_reading_data(tmp_path, capsys, objective,
                                                                                message):
    from phf.cli import main

    run = tmp_path / "run"
    assert main(["train", "tasks/pep8", "models/tiny", *TINY, objective, f"data.scored_path={tmp_path}/missing.jsonl",
                 f"training.output_dir={run}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("phf train: error: ") and "\n" not in err and message in err
    assert not run.exists()


def test_sweep_start_at_names_a_finetuning_objective_that_does_not_exist(tmp_path, capsys):
    from phf.cli import main

    assert main(["sweep", "--start-at", "0,0.2", "--finetune", "nope", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("phf sweep: error: --finetune: 'nope' is not an objective") and "\n" not in err
    assert not (tmp_path / "s").exists()
