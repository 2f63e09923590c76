"""The run config: each component's section, loaded from YAML files merged in order,
then dotted overrides.

A run is described by a task config (corpus + scorer + thresholds), an objective
config and a model config, as in the paper's code. Later files and overrides win:

    cfg = load_config(["tasks/pep8", "objectives/conditional", "models/tiny"],
                      ["training.learning_rate=5e-4"])

Each section is owned by its component (`phf.scorers.config.TaskConfig`,
`phf.data.config.DataConfig`, `phf.objective_config`, `phf.model_config`,
`phf.training_config`, `phf.evaluation.config`). Every key is checked before any work
starts, and every problem is reported at once: an unknown key gets a did-you-mean, a
value of the wrong type or out of range one message naming the key.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path

import yaml
from pydantic import BaseModel, Field, ValidationError

from phf.config_base import Section
from phf.data.config import DataConfig
from phf.errors import ConfigError
from phf.evaluation.config import EvalConfig
from phf.model_config import ModelConfig, TokenizerConfig
from phf.objective_config import conditioning_problems
from phf.objective_config import (OBJECTIVE_CLASSES, OBJECTIVES, SCHEDULE, MLEConfig, RunObjectiveConfig,
                                  ScheduleConfig, objective_threshold, phases_of, schedule_problems)
from phf.paths import CONFIG_DIR, looks_local, resolve_config_path
from phf.scorers.config import TaskConfig
from phf.training_config import TrainingConfig

__all__ = ["Config", "ConfigError", "load_config", "check_paths", "CONFIG_DIR", "OBJECTIVES",
           "DataConfig", "EvalConfig", "ModelConfig", "TokenizerConfig", "TrainingConfig", "TaskConfig"]


class Config(Section):
    task: TaskConfig = Field(default_factory=TaskConfig)
    """The task: scorer and thresholds."""
    data: DataConfig = Field(default_factory=DataConfig)
    """The corpus and its scored records."""
    objective: RunObjectiveConfig = Field(default_factory=MLEConfig)
    """The objective (`name` picks it) and its own settings; `schedule`: several in one run."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    """The model: a preset or a checkpoint."""
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    """The tokenizer: loaded, or trained on the corpus."""
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    """Budget, batch, optimiser, checkpoints."""
    eval: EvalConfig = Field(default_factory=EvalConfig)
    """Sampling, scenarios, KL, red teaming."""

    def problems(self) -> list[str]:
        out = [p for name in type(self).model_fields for p in getattr(self, name).problems()]
        out += [f"task.thresholds.{name}: not an objective ({', '.join(OBJECTIVES)})"
                for name in self.task.thresholds if name not in OBJECTIVES]
        phases = phases_of(self.objective)
        for i, (_, objective) in enumerate(phases):
            key = f"objective.phases[{i}].objective" if self.objective.name == SCHEDULE else "objective"
            for name in getattr(objective, "attributes", None) or ():
                if name not in self.task.attributes:
                    out.append(f"{key}.attributes: {name!r} is not one of task.attributes "
                               f"({', '.join(self.task.attributes) or 'none'})")
        t = self.training
        out += schedule_problems(self.objective, math.ceil(t.num_tokens / (t.effective_batch_size * t.block_size)))
        if self.objective.name == SCHEDULE and self.data.packed_path:
            out.append("data.packed_path: a schedule packs each phase's blocks with its own objective; "
                       "give data.scored_path instead")
        if self.eval.decoding.uses_tags and all(o.name != "conditional" for _, o in phases):
            out.append(f"eval.decoding.mode: {self.eval.decoding.label()} uses the control tokens, which objective "
                       f"{self.objective.name!r} does not train; use plain or rerank (rank_by: scorer)")
        out += conditioning_problems([o for _, o in phases], len(self.task.attributes), self.eval.decoding)
        return out

    # --- what several components read --------------------------------------------
    @property
    def threshold(self) -> float | None:
        """The objective's absolute threshold (None: a corpus percentile, see
        `phf.data.transforms.resolve_threshold`)."""
        return objective_threshold(self.objective, self.task.thresholds)

    @property
    def drop_token_fraction(self) -> float:
        """Conditional training's fraction of segments without a control token: the
        objective's own, else the task's (0 for the other objectives)."""
        return self.drop_token_fraction_of(self.objective)

    def drop_token_fraction_of(self, objective) -> float:
        """`drop_token_fraction` of `objective` (the run's, or a schedule phase's)."""
        if objective.name != "conditional":
            return 0.0
        own = objective.drop_token_fraction
        return self.task.drop_token_fraction if own is None else own

    def conditional_attributes(self, objective=None) -> dict:
        """{attribute: AttributeConfig} that conditional training marks (empty for a
        single-attribute task or another objective); `objective`: a schedule phase's."""
        objective = objective or self.objective
        if objective.name != "conditional":
            return {}
        chosen = objective.attributes or list(self.task.attributes)
        return {a: self.task.attributes[a] for a in chosen}

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


# --- loading -------------------------------------------------------------------------

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
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        value = raw  # not YAML, e.g. a glob like *.txt: the plain string
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def merged_settings(files: list[str] = (), overrides: list[str] = ()) -> dict:
    """The raw mapping of YAML files and overrides, merged left to right."""
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
    return raw


def load_config(files: list[str] = (), overrides: list[str] = ()) -> Config:
    return config_from_dict(merged_settings(files, overrides))


def config_from_dict(raw: dict) -> Config:
    """Validate a raw mapping into a Config; every problem raised at once as ConfigError."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a mapping, got {type(raw).__name__}")
    objective = raw.get("objective")
    if isinstance(objective, dict):
        if objective.get("name", "mle") not in (*OBJECTIVES, SCHEDULE):
            # checked here, so that the message names the choices instead of pydantic's tag error
            raise ConfigError(f"objective.name: {objective.get('name')!r} is not one of "
                              f"{', '.join((*OBJECTIVES, SCHEDULE))}")
        raw = {**raw, "objective": {"name": "mle", **objective}}  # no name: MLE, the default
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError([_describe(err, raw) for err in e.errors()]) from None
    if problems := cfg.problems():
        raise ConfigError(problems)
    return cfg


def _describe(err: dict, raw: dict) -> str:
    """One pydantic error as "key: message", with a did-you-mean for unknown keys."""
    tags = (*OBJECTIVES, SCHEDULE)
    loc = [p for p in err["loc"] if not (isinstance(p, str) and p in tags and _is_tag(err["loc"], p))]
    key = _dotted(loc)
    if err["type"] == "extra_forbidden":
        known = _fields_at(loc[:-1], raw)
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"; did you mean {_dotted([*loc[:-1], close[0]])!r}?" if close else ""
        if loc[:1] == ["objective"] and not close:
            hint = f" (objective {_raw_at(loc[:-1], raw).get('name', 'mle')!r} takes: {', '.join(known)})"
        return f"unknown config key {key!r}{hint}"
    value = err.get("input")
    return f"{key}: {err['msg'][0].lower() + err['msg'][1:]}, got {value!r}"


def _dotted(loc: list) -> str:
    """("eval", "scenarios", 0, "name") -> "eval.scenarios[0].name"."""
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[")


def _is_tag(loc: tuple, part: str) -> bool:
    """Whether `part` is the union tag pydantic puts after an objective (or a schedule phase's)."""
    return any(loc[i] == part and loc[i - 1] == "objective" for i in range(1, len(loc)))


def _fields_at(path: list, raw: dict) -> list[str]:
    """The field names of the section at `path` ("objective" depends on its name)."""
    model: type[BaseModel] = Config
    for i, part in enumerate(path):
        if isinstance(part, int):
            continue
        if part == "objective":  # the run's objective or a schedule phase's: its class by its name
            name = _raw_at(path[:i + 1], raw).get("name", "mle")
            model = ScheduleConfig if name == SCHEDULE else OBJECTIVE_CLASSES.get(name, MLEConfig)
            continue
        annotation = model.model_fields[part].annotation
        sub = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)]
        model = next((a for a in sub if issubclass(a, BaseModel)), None)
        if model is None:
            return []
    return list(model.model_fields)


def _raw_at(path: list, raw: dict) -> dict:
    """The raw mapping at `path` ({} where there is none)."""
    for part in path:
        try:
            raw = raw[part]
        except (KeyError, IndexError, TypeError):
            return {}
    return raw if isinstance(raw, dict) else {}


def check_paths(cfg: Config, training: bool = True) -> None:
    """Files the config names that are missing, checked before any work starts.

    Only paths that cannot be hub names are checked (see `looks_local`); a hub name
    is the user's explicit request to use the network.
    """
    named = {"model.path": cfg.model.path, "tokenizer.path": cfg.tokenizer.path}
    if training and cfg.data.packed_path:
        named["data.packed_path"] = cfg.data.packed_path
    elif training:
        scored = cfg.data.scored_path
        named["data.scored_path"] = scored if isinstance(scored, str) else None
    elif cfg.data.source in ("dir", "jsonl", "hf"):
        named["data.path"] = cfg.data.path
    problems = [f"{key}: {value} not found" + (" (run `phf score` first?)" if key == "data.scored_path" else "")
                for key, value in named.items()
                if value and looks_local(value) and not any(c in value for c in "*?[")
                and not Path(value).expanduser().exists()]
    if problems:
        raise ConfigError(problems)


def describe(cfg: Config) -> str:
    """The config as YAML, each key with its meaning as a comment (`phf config`)."""
    lines: list[str] = []
    _describe_section(cfg, lines, 0)
    return "\n".join(lines) + "\n"


def _describe_section(section: BaseModel, lines: list[str], depth: int) -> None:
    indent = "  " * depth
    fields = type(section).model_fields
    for name in sorted(fields, key=lambda n: n != "name"):  # an objective's name first
        value, doc = getattr(section, name), " ".join((fields[name].description or "").split())
        comment = f"  # {doc}" if doc else ""
        if isinstance(value, BaseModel):
            lines.append(f"{indent}{name}:{comment}")
            _describe_section(value, lines, depth + 1)
        else:
            text = yaml.safe_dump(_plain(value), default_flow_style=True, width=10_000)
            lines.append(f"{indent}{name}: {text.removesuffix(chr(10)).removesuffix('...').strip()}{comment}")


def _plain(value):
    """Config values as YAML-able data (models inside lists and mappings included)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
