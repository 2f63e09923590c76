"""Schedule overhead: tokens/s of a scheduled run (MLE, then conditional training from the
middle of the run) vs the same objective unscheduled (conditional from the first step).

Both through phf's PHFTrainer on the tiny preset, same batch, steps, model and
vocabulary (the control tokens added). The scheduled run trains on `phf.schedule`'s
PhasedBlocks (the MLE blocks, then the conditional ones, laid out step by step by its
sampler, the loss picked per phase); the unscheduled one on the conditional blocks with
Trainer's own sampler. The two alternate within each repeat (rotating which goes
first); a run's rate is that of its median step, each ratio is scheduled / unscheduled
of the same repeat, reported as the median over repeats.

    .venv/bin/python bench/schedule_overhead.py [--quick]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import trainloop  # noqa: E402

BATCH = 16


def timed(scheduled: bool, mle_dir, cond_dir, tokenizer, warmup: int, steps: int) -> float:
    """Tokens/s of the median of the `steps` steps after `warmup`; the scheduled run
    switches at the middle of the timed steps."""
    from phf.data.packing import PackedDataset
    from phf.model import resize_for_new_tokens
    from phf.objectives import build_objective
    from phf.schedule import PhasedBlocks, PhaseSchedule
    from phf.trainer import PHFTrainer

    shape = common.PRESET_SHAPES["tiny"]
    total = warmup + steps
    model = trainloop.make_model("tiny", len(tokenizer), shape["block_size"])
    resize_for_new_tokens(model, len(tokenizer))
    cond = PackedDataset(cond_dir, "train")
    loss = build_objective("conditional")
    schedule = None
    data = cond
    if scheduled:
        schedule = PhaseSchedule([0, warmup + steps // 2], [build_objective("mle"), loss], ["mle", "conditional"])
        data = PhasedBlocks([PackedDataset(mle_dir, "train"), cond], [0, 1], schedule, total, BATCH, seed=0)
    clock = trainloop._StepClock()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = PHFTrainer(model=model, args=trainloop.training_args(tmp, total, BATCH), train_dataset=data,
                             objective=loss, tokens_per_step=BATCH * shape["block_size"], schedule=schedule,
                             callbacks=[clock])
        trainer.train()
    # the median step: a burst of load from the machine's other jobs moves one step, not the rate
    durations = [b - a for a, b in zip(clock.times[warmup - 1:], clock.times[warmup:])]
    return BATCH * shape["block_size"] / common.median(durations)


def main(argv=None) -> dict:
    import torch

    repeats, steps = common.repeats_and_steps(__doc__.splitlines()[0], argv, quick=(1, 2), full=(3, 5))
    # one thread: on the shared 2-core machine two threads' step times swing with the other
    # jobs' load far more than one thread's (measured: 0.79x-1.51x ratios with 2, +-2% with 1)
    torch.set_num_threads(1)
    warmup = 1
    # 1 MB of the scored stdlib corpus: ~1,000 blocks, more than a run draws
    mle_dir, _ = common.packed("mle", "tiny", max_bytes=1_000_000)
    cond_dir, tokenizer = common.packed("conditional", "tiny", max_bytes=1_000_000)
    tps = {"scheduled": [], "unscheduled": []}
    ratios, retries = [], 0
    for r in range(repeats):
        order = ["scheduled", "unscheduled"][::(-1) ** r]

        def one_repeat():
            return {k: timed(k == "scheduled", mle_dir, cond_dir, tokenizer, warmup, steps) for k in order}

        this, n = common.clean_repeat(one_repeat)
        retries += n
        for k, v in this.items():
            tps[k].append(v)
        ratios.append(this["scheduled"] / this["unscheduled"])
        print(f"repeat {r}: " + ", ".join(f"{k} {v:.0f}" for k, v in this.items())
              + f" tok/s, ratio {ratios[-1]:.3f}", flush=True)
    result = {
        "preset": "tiny", "batch_size": BATCH, "torch_threads": 1, "steps_per_run": steps, "warmup_steps": warmup,
        "schedule": "mle, then conditional from the middle of the timed steps",
        "tokens_per_s": {k: common.summary(v) for k, v in tps.items()},
        "ratio": common.summary(ratios), "target": ">= 0.95x unscheduled",
        "repeats_redone_after_a_stop": retries, "met": common.median(ratios) >= 0.95,
    }
    print(f"scheduled / unscheduled: {common.median(ratios):.3f}x (median of {len(ratios)})", flush=True)
    common.write_result("schedule_overhead", result)
    return result


if __name__ == "__main__":
    main()
