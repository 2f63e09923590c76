"""The AWR value head: a linear map from the last hidden state to the predicted reward.

Two kinds (`add_value_head(kind=...)`, config `objective.value_head`):

* "sigmoid" (default): the paper's released head. A bias-free linear layer, initialised
  at zero, followed by -sigmoid: V in (-1, 0), V = -0.5 for every token at the start.
  Rewards are -scores <= 0 and, for the paper's per-character and probability scores,
  nearly always >= -1 (no stdlib line scores above 1 under PEP8), so the range fits.
* "linear": a linear layer with a bias, initialised at zero: V unbounded, V = 0 at the
  start (AWR then starts as RWR).

It is attached as `model.value_head`, an ordinary submodule of the Hugging Face model,
so the optimizer, DDP and `save_pretrained` see it with no code of ours: its weights
are saved in model.safetensors as `value_head.weight` (and `value_head.bias` for
"linear"), and the kind in config.json as `phf_value_head`.
`AutoModelForCausalLM.from_pretrained` does not know the head: it loads the LM, lists
the keys as UNEXPECTED in its load report (a logged warning, not an error) and
drops them. `load_value_head` reads them back, as a head of the kind that was saved.

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
#: the config.json key that records the kind of a saved head
CONFIG_KEY = "phf_value_head"
VALUE_HEADS = ("sigmoid", "linear")


class ValueHead(torch.nn.Linear):
    """`Linear(hidden_size, 1)`, zero-initialised; "sigmoid": no bias, output -sigmoid.

    `detach_input`: the head reads detached hidden states, so the value loss trains the
    head only, not the trunk.
    """

    def __init__(self, hidden_size: int, kind: str = "sigmoid", detach_input: bool = False,
                 device=None, dtype=None):
        if kind not in VALUE_HEADS:
            raise ValueError(f"value head kind must be one of {', '.join(VALUE_HEADS)}, not {kind!r}")
        super().__init__(hidden_size, 1, bias=kind == "linear", device=device, dtype=dtype)
        torch.nn.init.zeros_(self.weight)
        if self.bias is not None:
            torch.nn.init.zeros_(self.bias)
        self.kind = kind
        self.detach_input = detach_input

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.detach_input:
            hidden_states = hidden_states.detach()
        out = super().forward(hidden_states)
        return -torch.sigmoid(out) if self.kind == "sigmoid" else out

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, kind={self.kind}, detach_input={self.detach_input}"


def add_value_head(model: torch.nn.Module, detach: bool = False, kind: str = "sigmoid") -> None:
    """Attach a zero-initialised `ValueHead` of `kind` as `model.value_head` and record
    the kind in `model.config` (saved in config.json by `save_pretrained`).

    "sigmoid" starts at V = -0.5, "linear" at V = 0 (see the module docstring).
    `detach`: the head reads detached hidden states (no gradient into the trunk).
    """
    hidden_size = model.config.get_text_config().hidden_size
    like = model.get_input_embeddings().weight
    model.value_head = ValueHead(hidden_size, kind, detach, device=like.device, dtype=like.dtype)
    setattr(model.config, CONFIG_KEY, kind)
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
    return model.value_head(hidden_states).squeeze(-1)


def load_value_head(model: torch.nn.Module, checkpoint_dir: str | Path) -> bool:
    """Restore the value head saved with a model in `checkpoint_dir`.

    Call after `from_pretrained(checkpoint_dir)`. The head comes back as the kind it was
    saved as: the kind recorded in the checkpoint's config.json, or for a checkpoint
    without it, "linear" when a bias was saved and "sigmoid" when not. It is added
    (detach=False) if the model has none yet; an existing one keeps its `detach`
    setting and gets the saved weights, cast to its dtype and device, and must be of
    the saved kind (ValueError otherwise). Returns False (and changes nothing) when the
    checkpoint has no value head.
    """
    directory = Path(checkpoint_dir)
    tensors = _read_value_head(directory)
    if not tensors:
        return False
    kind = saved_value_head_kind(directory, tensors)
    head = getattr(model, "value_head", None)
    if head is None:
        add_value_head(model, kind=kind)
    elif getattr(head, "kind", "linear") != kind:
        raise ValueError(f"{directory}: the saved value head is {kind!r} but the model's is "
                         f"{getattr(head, 'kind', 'linear')!r} (objective.value_head)")
    model.value_head.load_state_dict(tensors)
    return True


def saved_value_head_kind(directory: Path, tensors: dict[str, torch.Tensor]) -> str:
    """The kind of the head saved in `directory` whose tensors are `tensors`."""
    config = directory / "config.json"
    kind = json.loads(config.read_text()).get(CONFIG_KEY) if config.exists() else None
    inferred = "linear" if "bias" in tensors else "sigmoid"
    if kind is None:
        return inferred
    if kind != inferred:
        raise ValueError(f"{directory}: config.json says the value head is {kind!r}, but its saved "
                         f"tensors ({', '.join(sorted(tensors))}) are those of a {inferred!r} head")
    return kind


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
