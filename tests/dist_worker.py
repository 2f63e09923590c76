"""`phf train` through the command line, in one process of a distributed launch,
instrumented for tests/test_distributed.py:

    torchrun --standalone --nproc_per_node 2 tests/dist_worker.py OUT train [phf train settings...]
    python tests/dist_worker.py OUT train [phf train settings...]          # one process, no launcher

The run itself is the unmodified `phf train`. Each process also writes OUT/rank{R}.pt:
the indices of the training blocks it read, in order, the model's parameters before
and after training (unwrapped from DDP), and what Trainer saw of the process group.

With PHF_TEST_CRASH_AT_STEP=K the process of rank PHF_TEST_CRASH_RANK (default: the
last) dies at the end of optimizer step K without any cleanup, as a crashed machine
would; torchrun then stops the others.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from transformers import TrainerCallback

from phf.cli import main
from phf.data.packing import PackedDataset
from phf.trainer import PHFTrainer

torch.set_num_threads(1)

OUT = Path(sys.argv[1])
SEEN: list[int] = []

_init, _getitem = PackedDataset.__init__, PackedDataset.__getitem__


def _init_with_split(self, out_dir, split="train", *args, **kwargs):
    _init(self, out_dir, split, *args, **kwargs)
    self.split = split


def _recording_getitem(self, i):
    if self.split == "train":  # not the held-out blocks of the evaluation callback
        SEEN.append(int(i))
    return _getitem(self, i)


PackedDataset.__init__, PackedDataset.__getitem__ = _init_with_split, _recording_getitem


class Crash(TrainerCallback):
    def __init__(self, step: int, rank: int):
        self.step, self.rank = step, rank

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step and args.process_index == self.rank:
            os._exit(13)


def _params(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters()}


_train = PHFTrainer.train


def _instrumented_train(self, *args, **kwargs):
    before = _params(self.model)
    if os.environ.get("PHF_TEST_CRASH_AT_STEP"):
        rank = int(os.environ.get("PHF_TEST_CRASH_RANK", self.args.world_size - 1))
        self.add_callback(Crash(int(os.environ["PHF_TEST_CRASH_AT_STEP"]), rank))
    result = _train(self, *args, **kwargs)
    dist = torch.distributed
    OUT.mkdir(parents=True, exist_ok=True)
    torch.save({
        "rank": self.args.process_index,
        "world_size": self.args.world_size,
        "backend": dist.get_backend() if dist.is_available() and dist.is_initialized() else None,
        "model_class": type(self.model_wrapped).__name__,
        "per_device_batch_size": self.args.train_batch_size,
        "gradient_accumulation_steps": self.args.gradient_accumulation_steps,
        "max_steps": self.state.max_steps,
        "num_blocks": len(self.train_dataset),
        "seen": SEEN,
        "before": before,
        "after": _params(self.accelerator.unwrap_model(self.model_wrapped)),
    }, OUT / f"rank{self.args.process_index}.pt")
    return result


PHFTrainer.train = _instrumented_train

if __name__ == "__main__":
    sys.exit(main(sys.argv[2:]))
