"""The AWR value head: a linear map from the last hidden state to the predicted reward.

It is attached as `model.value_head`, an ordinary submodule of the Hugging Face model,
so the optimizer, DDP and `save_pretrained` see it with no code of ours: its weights
are saved in model.safetensors as `value_head.weight` and `value_head.bias`.
`AutoModelForCausalLM.from_pretrained` does not know the head: it loads the LM, lists
the two keys as UNEXPECTED in its load report (a logged warning, not an error) and
drops them. `load_value_head` reads them back.

The values are computed inside the model's forward (a forward hook adds
`outputs["token_values"]` whenever hidden states are returned), not by a call from the
trainer after it: DDP, FSDP and DeepSpeed manage the parameters used in the wrapped
forward. A head applied outside it fails under DDP ("Expected to mark a variable
ready only once"). (Not `outputs["values"]`: that would shadow the output's dict method.)
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors import safe_open
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, ModelOutput

PREFIX = "value_head."


def add_value_head(model: torch.nn.Module, detach: bool = False) -> None:
    """Attach a zero-initialised `Linear(hidden_size, 1)` as `model.value_head`.

    Zero init: V = 0 at first, so AWR starts as RWR instead of from random advantages.
    `detach`: the head reads detached hidden states, so the value loss trains the head
    only, not the trunk.
    """
    hidden_size = model.config.get_text_config().hidden_size
    like = model.get_input_embeddings().weight
    head = torch.nn.Linear(hidden_size, 1, device=like.device, dtype=like.dtype)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    head.detach_input = detach
    model.value_head = head
    if not getattr(model, "_phf_values_hook", False):
        model.register_forward_hook(_add_values)
        model._phf_values_hook = True


def _add_values(model: torch.nn.Module, args, outputs):
    """Forward hook: `outputs["token_values"]` [B, T] when the forward returned hidden states."""
    hidden_states = outputs.get("hidden_states") if isinstance(outputs, ModelOutput) else None
    if hidden_states is None or getattr(model, "value_head", None) is None:
        return outputs
    return _with_values(type(outputs))(**outputs, token_values=compute_values(model, hidden_states[-1]))


_WITH_VALUES: dict[type, type] = {}


def _with_values(output_type: type) -> type:
    """`output_type` plus a `token_values` field: a declared field, so that the output
    survives DDP's pytree flatten / unflatten of forward outputs."""
    if output_type not in _WITH_VALUES:
        _WITH_VALUES[output_type] = dataclasses.make_dataclass(
            f"{output_type.__name__}WithValues", [("token_values", torch.Tensor | None, None)], bases=(output_type,))
    return _WITH_VALUES[output_type]


def compute_values(model: torch.nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """Values [B, T] from the last layer's hidden states [B, T, H].

    `model` may be wrapped (DDP, accelerate): the head is looked up on `.module`.
    """
    while not hasattr(model, "value_head") and hasattr(model, "module"):
        model = model.module
    head = model.value_head
    if head.detach_input:
        hidden_states = hidden_states.detach()
    return head(hidden_states).squeeze(-1)


def load_value_head(model: torch.nn.Module, checkpoint_dir: str | Path) -> bool:
    """Restore the value head saved with a model in `checkpoint_dir`.

    Call after `from_pretrained(checkpoint_dir)`. The head is added (detach=False) if
    the model has none yet; an existing one keeps its `detach` setting and gets the
    saved weights, cast to its dtype and device. Returns False (and changes nothing)
    when the checkpoint has no value head.
    """
    tensors = _read_value_head(Path(checkpoint_dir))
    if not tensors:
        return False
    if not hasattr(model, "value_head"):
        add_value_head(model)
    model.value_head.load_state_dict(tensors)
    return True


def _read_value_head(directory: Path) -> dict[str, torch.Tensor]:
    """The `value_head.*` tensors of a safetensors checkpoint, single file or sharded."""
    index = directory / SAFE_WEIGHTS_INDEX_NAME
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = {file for key, file in weight_map.items() if key.startswith(PREFIX)}
    elif (directory / SAFE_WEIGHTS_NAME).exists():
        files = {SAFE_WEIGHTS_NAME}
    else:
        files = set()
    tensors = {}
    for file in files:
        with safe_open(directory / file, framework="pt") as f:
            for key in f.keys():
                if key.startswith(PREFIX):
                    tensors[key.removeprefix(PREFIX)] = f.get_tensor(key)
    return tensors
