"""Objective schedules inside one run (`objective.name: schedule`): which phase an
optimizer step is in, and the blocks each step draws.

Each phase trains on blocks packed with its own objective's data transform (`phf.train`
packs them). `PhasedBlocks` puts the phases' blocks side by side, and its sampler lays
the whole run out in advance: the sequences of optimizer step s are positions
[s x S, (s + 1) x S) of its order (S sequences per step), drawn from the blocks of the
phase that step s is in. Each phase's blocks are drawn from one seeded stream of
permutations, so the order depends on the seed only: a run resumed from a checkpoint
in any phase skips the same steps and continues with the same blocks. Under DDP,
accelerate deals the order out by batches to the processes, so each step still takes
its S sequences from its own phase.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class PhaseSchedule:
    """The phases of a run: each one's first optimizer step (0-based), loss and name."""

    first_steps: list[int]
    objectives: list  # phf.objectives.Objective of each phase
    names: list[str]

    def phase_at(self, step: int) -> int:
        """The phase of the optimizer step with 0-based index `step`."""
        return bisect.bisect_right(self.first_steps, step) - 1

    def last_steps(self, max_steps: int) -> list[int]:
        """Each phase's last step, as Trainer counts them (1-based global_step)."""
        return [*self.first_steps[1:], max_steps]


class PhasedBlocks(torch.utils.data.Dataset):
    """The blocks of every phase, one dataset after the other; `sampler()` gives the
    run's order (see the module docstring). `phase_data[p]` is the index in `datasets`
    of phase p's blocks (phases with the same blocks share one)."""

    def __init__(self, datasets: list, phase_data: list[int], schedule: PhaseSchedule, max_steps: int,
                 sequences_per_step: int, seed: int):
        self.datasets = datasets
        self.offsets = np.cumsum([0] + [len(d) for d in datasets]).tolist()
        self.phase_data = phase_data
        self.schedule = schedule
        self.max_steps = max_steps
        self.sequences_per_step = sequences_per_step
        self.seed = seed

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, i: int) -> dict:
        d = bisect.bisect_right(self.offsets, i) - 1
        return self.datasets[d][i - self.offsets[d]]

    def sampler(self) -> "PhaseSampler":
        return PhaseSampler(self)


class PhaseSampler(torch.utils.data.Sampler):
    """Indices into `PhasedBlocks`, max_steps x S of them, step by step."""

    def __init__(self, blocks: PhasedBlocks):
        self.blocks = blocks

    def __len__(self) -> int:
        return self.blocks.max_steps * self.blocks.sequences_per_step

    def __iter__(self):
        b = self.blocks
        streams = [_permutations(len(d), np.random.default_rng([b.seed, i])) for i, d in enumerate(b.datasets)]
        bounds = b.schedule.last_steps(b.max_steps)
        for phase, (first, last) in enumerate(zip(b.schedule.first_steps, bounds)):
            d = b.phase_data[phase]
            stream, offset = streams[d], b.offsets[d]
            for _ in range((last - first) * b.sequences_per_step):
                yield offset + next(stream)


def _permutations(n: int, rng: np.random.Generator):
    """0..n-1 in a random order, again and again (each pass a new order)."""
    while True:
        yield from rng.permutation(n).tolist()
