"""The training settings: token budget, batch, optimiser, precision, checkpoints."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from phf.config_base import Section

Auto = Literal[True, False, "auto"]


class TrainingConfig(Section):
    output_dir: str = "runs/run"
    """The run folder: model, tokenizer, config.yaml, metrics.jsonl, checkpoints/."""
    num_tokens: int = Field(2_000_000, gt=0)
    """Token budget: the number of optimizer steps follows from it."""
    block_size: int = Field(256, ge=8)
    """Tokens per training sequence."""
    per_device_batch_size: int = Field(16, ge=1)
    """Sequences per device per micro-step."""
    effective_batch_size: int = Field(32, ge=1)
    """Sequences per optimizer step, over all devices (sets gradient accumulation)."""
    learning_rate: float = Field(1e-3, gt=0)
    """Peak learning rate."""
    lr_scheduler: str = "cosine"
    """A transformers scheduler name (cosine, linear, constant, ...)."""
    warmup_ratio: float = Field(0.02, ge=0, lt=1)
    """Fraction of the steps spent warming the learning rate up."""
    weight_decay: float = Field(0.1, ge=0)
    """AdamW weight decay."""
    max_grad_norm: float = Field(1.0, gt=0)
    """Gradient clipping norm."""
    seed: int = 42
    """Sets model initialisation, data order and control-token drops."""
    bf16: Auto = "auto"
    """bf16 autocast: true, false or auto (on a GPU that supports it; fp32 on CPU)."""
    compile: Auto = False
    """torch.compile the model and the loss: true, false or auto (on a GPU). It costs a
    minute of compilation at the start, so it pays off on long runs, not on CPU demos."""
    logging_steps: int = Field(10, ge=1)
    """Log the loss every this many optimizer steps (to metrics.jsonl and TensorBoard)."""
    save_steps: int | None = Field(None, ge=1)
    """Save a resumable checkpoint every this many steps (null: a tenth of the run, at
    least 10 steps); one is also saved at the last step."""
    save_checkpoints: bool = True
    """Save resumable checkpoints (false: none; a crash then loses the run)."""
    save_total_limit: int | None = Field(2, ge=1)
    """Keep the newest this many checkpoints (null: all)."""
    dataloader_num_workers: int = Field(0, ge=0)
    """Data-loading processes per device (0: in the training process)."""
    report_to: list[str] = Field(default_factory=lambda: ["tensorboard"])
    """Where transformers reports metrics besides metrics.jsonl (tensorboard, wandb, none)."""

    def problems(self) -> list[str]:
        out = []
        if self.effective_batch_size < self.per_device_batch_size \
                or self.effective_batch_size % self.per_device_batch_size:
            out.append(f"training.effective_batch_size: must be a multiple of per_device_batch_size "
                       f"({self.per_device_batch_size}), got {self.effective_batch_size}")
        if self.num_tokens < self.effective_batch_size * self.block_size:
            out.append(f"training.num_tokens: {self.num_tokens} is smaller than one batch "
                       f"({self.effective_batch_size} x {self.block_size} tokens)")
        return out
