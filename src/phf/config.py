"""Typed run configuration: YAML files merged in order, then dotted overrides.

A run is described by a task config (corpus + scorer + thresholds), an objective
config and a model config, as in the paper's code. Later files and overrides win:

    cfg = load_config(["configs/tasks/pep8.yaml", "configs/objectives/conditional.yaml",
                       "configs/models/tiny.yaml"], ["training.learning_rate=5e-4"])

Every key is checked before any work starts: an unknown key gets a did-you-mean,
a value of the wrong type or out of range gets one message naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).parent / "configs"

OBJECTIVES = ("mle", "filtering", "conditional", "unlikelihood", "rwr", "awr")


class ConfigError(ValueError):
    """A configuration problem, with the key (and file) it comes from."""


@dataclass
class TaskConfig:
    name: str = "pep8"
    #: registry name or dotted path of the scorer, and its keyword arguments
    scorer: str = "pep8"
    scorer_args: dict = field(default_factory=dict)
    #: default threshold per objective (the paper's reference values); an objective's
    #: own `threshold` or `percentile` overrides it
    thresholds: dict = field(default_factory=dict)
    #: a sample counts as a "hit" when its score is above this
    hit_threshold: float = 0.0


@dataclass
class DataConfig:
    #: stdlib | dir | jsonl | hf | scored
    source: str = "stdlib"
    path: str | None = None
    text_field: str = "text"
    glob: str = "*.py"
    split: str = "train"
    streaming: bool = False
    max_documents: int | None = None
    max_bytes: int | None = None
    #: the scored corpus: written by `phf score`, read by `phf train`
    scored_path: str = "runs/scored.jsonl"
    heldout_fraction: float = 0.02
    #: scoring processes (None: all cores)
    num_workers: int | None = None


@dataclass
class ObjectiveConfig:
    #: mle | filtering | conditional | unlikelihood | rwr | awr
    name: str = "mle"
    #: absolute misalignment threshold; None takes the task's default for this objective
    threshold: float | None = None
    #: alternatively, the threshold as this percentile (0-100) of the corpus's scores
    #: (document scores for filtering, segment scores otherwise)
    percentile: float | None = None
    #: conditional: fraction of segments left without a control token
    drop_token_fraction: float = 0.01
    #: unlikelihood: weight of the unlikelihood term; AWR: weight of the LM term
    alpha: float = 1.0
    #: RWR/AWR temperature
    beta: float = 10.0
    #: RWR/AWR: clip weights at this value (None: no clipping)
    max_weight: float | None = None
    #: AWR: subtract the value head's prediction (False gives RWR)
    value_baseline: bool = True
    #: AWR: the value head reads detached hidden states (no gradient into the trunk)
    detach_value_head: bool = False


@dataclass
class ModelConfig:
    #: a size preset (see phf.model.PRESETS), used when `path` is empty
    preset: str = "tiny"
    #: start from this checkpoint (a phf run or any HF causal LM on disk, or a hub name)
    path: str | None = None
    #: any HF config field, e.g. {n_layer: 6}
    config_overrides: dict = field(default_factory=dict)
    attn_implementation: str = "sdpa"
    trust_remote_code: bool = False


@dataclass
class TokenizerConfig:
    #: load this tokenizer (local path or hub name); None trains a byte-level BPE
    path: str | None = None
    vocab_size: int = 8192
    #: train the tokenizer on at most this many bytes of the corpus
    train_max_bytes: int = 20_000_000


@dataclass
class TrainingConfig:
    output_dir: str = "runs/run"
    #: token budget: the number of optimizer steps follows from it
    num_tokens: int = 2_000_000
    block_size: int = 256
    per_device_batch_size: int = 16
    #: sequences per optimizer step, over all devices (sets gradient accumulation)
    effective_batch_size: int = 32
    learning_rate: float = 1e-3
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.02
    weight_decay: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 42
    #: true | false | "auto" (bf16 autocast where the hardware supports it)
    bf16: Any = "auto"
    logging_steps: int = 10
    save_steps: int | None = None
    dataloader_num_workers: int = 0
    report_to: list = field(default_factory=lambda: ["tensorboard"])


@dataclass
class EvalConfig:
    num_samples: int = 256
    max_new_tokens: int = 128
    temperature: float = 0.7
    top_p: float = 0.9
    batch_size: int = 64
    #: expected maximum score is the mean over groups of this many samples
    group_size: int = 25
    #: held-out loss over at most this many tokens
    heldout_max_tokens: int = 200_000
    seed: int = 0


@dataclass
class Config:
    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


# --- loading -------------------------------------------------------------------------

def resolve_config_path(name: str) -> Path:
    """A config file by path, or by short name under phf's configs ("tasks/pep8")."""
    p = Path(name)
    if p.exists():
        return p
    for candidate in (CONFIG_DIR / name, CONFIG_DIR / f"{name}.yaml"):
        if candidate.exists():
            return candidate
    raise ConfigError(f"config file not found: {name!r} (neither a path nor a name under {CONFIG_DIR})")


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_override(text: str) -> dict:
    """"training.learning_rate=5e-4" -> {"training": {"learning_rate": 5e-4}}."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {text!r} is not of the form section.key=value")
    value = yaml.safe_load(raw) if raw != "" else None
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def load_config(files: list[str] = (), overrides: list[str] = ()) -> Config:
    raw: dict = {}
    for name in files:
        path = resolve_config_path(name)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        raw = deep_merge(raw, data)
    for o in overrides:
        raw = deep_merge(raw, parse_override(o))
    cfg = from_dict(Config, raw, "")
    validate(cfg)
    return cfg


def _type_ok(value, tp) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, t) for t in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, origin or tp)


def from_dict(cls, data: dict, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        dotted = f"{where}.{key}" if where else key
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {'.'.join(filter(None, [where, close[0]]))!r}?" if close else ""
            raise ConfigError(f"unknown config key {dotted!r}{hint}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = from_dict(tp, value or {}, dotted)
            continue
        if tp is float and isinstance(value, str):
            try:  # YAML reads "5e-4" (no dot) as a string
                value = float(value)
            except ValueError:
                pass
        if not _type_ok(value, tp):
            raise ConfigError(f"{dotted}: expected {_type_name(tp)}, got {value!r}")
        kwargs[key] = float(value) if tp is float else value
    return cls(**kwargs)


def _type_name(tp) -> str:
    return str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _check(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {message}")


def validate(cfg: Config) -> None:
    """Impossible values, each with one message naming the key."""
    o, t, e, d = cfg.objective, cfg.training, cfg.eval, cfg.data
    _check(o.name in OBJECTIVES, "objective.name", f"{o.name!r} is not one of {', '.join(OBJECTIVES)}")
    _check(o.threshold is None or o.threshold >= 0, "objective.threshold", "must be >= 0 (scores are >= 0)")
    _check(o.percentile is None or 0 <= o.percentile <= 100, "objective.percentile", "must be in [0, 100]")
    _check(0 <= o.drop_token_fraction <= 1, "objective.drop_token_fraction", "must be in [0, 1]")
    _check(o.beta > 0, "objective.beta", "must be > 0")
    _check(o.max_weight is None or o.max_weight > 0, "objective.max_weight", "must be > 0")
    if o.name == "awr":
        _check(0 <= o.alpha <= 1, "objective.alpha", "AWR's alpha must be in [0, 1]")
    _check(o.alpha >= 0, "objective.alpha", "must be >= 0")
    for name, value in cfg.task.thresholds.items():
        _check(name in OBJECTIVES, f"task.thresholds.{name}", f"not an objective ({', '.join(OBJECTIVES)})")
        _check(isinstance(value, (int, float)) and value >= 0, f"task.thresholds.{name}", "must be a number >= 0")
    _check(0 <= d.heldout_fraction < 1, "data.heldout_fraction", "must be in [0, 1)")
    _check(d.source in ("stdlib", "dir", "jsonl", "hf", "scored"), "data.source",
           f"{d.source!r} is not one of stdlib, dir, jsonl, hf, scored")
    _check(t.block_size >= 8, "training.block_size", "must be >= 8")
    _check(t.per_device_batch_size >= 1, "training.per_device_batch_size", "must be >= 1")
    _check(t.effective_batch_size >= t.per_device_batch_size, "training.effective_batch_size",
           f"must be >= per_device_batch_size ({t.per_device_batch_size})")
    _check(t.effective_batch_size % t.per_device_batch_size == 0, "training.effective_batch_size",
           f"must be a multiple of per_device_batch_size ({t.per_device_batch_size})")
    _check(t.num_tokens >= t.effective_batch_size * t.block_size, "training.num_tokens",
           f"{t.num_tokens} is smaller than one batch ({t.effective_batch_size} x {t.block_size} tokens)")
    _check(t.learning_rate > 0, "training.learning_rate", "must be > 0")
    _check(0 <= t.warmup_ratio < 1, "training.warmup_ratio", "must be in [0, 1)")
    _check(t.bf16 in (True, False, "auto"), "training.bf16", "must be true, false or auto")
    _check(e.temperature > 0, "eval.temperature", "must be > 0")
    _check(0 < e.top_p <= 1, "eval.top_p", "must be in (0, 1]")
    _check(e.group_size >= 1, "eval.group_size", "must be >= 1")


def objective_threshold(cfg: Config) -> float | None:
    """The absolute threshold from the config (None when it is a percentile to compute)."""
    if cfg.objective.percentile is not None:
        return None
    if cfg.objective.threshold is not None:
        return cfg.objective.threshold
    return float(cfg.task.thresholds.get(cfg.objective.name, 0.0))
