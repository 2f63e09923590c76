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
from pathlib import Path

import yaml
from pydantic import BaseModel, Field, ValidationError

from phf.config_base import Section
from phf.data.config import DataConfig
from phf.errors import ConfigError
from phf.evaluation.config import EvalConfig
from phf.model_config import ModelConfig, TokenizerConfig
from phf.objective_config import OBJECTIVE_CLASSES, OBJECTIVES, MLEConfig, ObjectiveConfig, objective_threshold
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
    objective: ObjectiveConfig = Field(default_factory=MLEConfig)
    """The objective (`name` picks it) and its own settings."""
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
        for name in getattr(self.objective, "attributes", None) or ():
            if name not in self.task.attributes:
                out.append(f"objective.attributes: {name!r} is not one of task.attributes "
                           f"({', '.join(self.task.attributes) or 'none'})")
        return out

    # --- what several components read --------------------------------------------
    @property
    def threshold(self) -> float | None:
        """The objective's absolute threshold (None: a corpus percentile, see
        `phf.data.transforms.resolve_threshold`)."""
        return objective_threshold(self.objective, self.task.thresholds)

<<<<<<< HEAD
    def conditional_attributes(self) -> dict:
        """{attribute: AttributeConfig} that conditional training marks (empty for a
        single-attribute task or another objective)."""
        if self.objective.name != "conditional":
            return {}
        chosen = self.objective.attributes or list(self.task.attributes)
        return {a: self.task.attributes[a] for a in chosen}
=======
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
    #: several attributes (scorer "multi"): {name: {threshold, drop_token_fraction}} for
    #: conditional training, one control-token pair per attribute
    attributes: dict = field(default_factory=dict)
    #: how the other objectives turn per-attribute scores into one: max | weighted_sum
    combine: str = "max"
    #: per-attribute weights for `combine` (default 1)
    combine_weights: dict = field(default_factory=dict)


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
    #: conditional, multi-attribute tasks: the task attributes that get control tokens
    #: (null: all of task.attributes; one name trains a single-attribute model on the same data)
    attributes: list | None = None
    #: unlikelihood: weight of the unlikelihood term; AWR: weight of the LM term
    alpha: float = 1.0
    #: unlikelihood: auto | threshold | score (auto, the released code's rule: weight
    #: tokens by their scores when the threshold is 0, else split at the threshold)
    weighting: str = "auto"
    #: unlikelihood: clamp 1 - p at this value (1e-20 as the released code)
    min_one_minus_p: float = 1e-20
    #: RWR/AWR temperature
    beta: float = 10.0
    #: RWR/AWR: clip weights at this value (1000 as the released code; None: no clipping)
    max_weight: float | None = 1000.0
    #: AWR: subtract the value head's prediction (False gives RWR)
    value_baseline: bool = True
    #: RWR/AWR: subtract this constant instead, with no value head (the released RWR: -0.5)
    fixed_value: float | None = None
    #: AWR: sigmoid (the released head: bias-free, -sigmoid, V in (-1, 0)) | linear
    value_head: str = "sigmoid"
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
    #: run Python code shipped with a hub model (off: only transformers' own classes)
    trust_remote_code: bool = False
    #: load pickled weights (pytorch_model.bin) when a checkpoint has no safetensors;
    #: off by default because unpickling a file can run code
    allow_pickle: bool = False
    #: round the embedding matrix up to a multiple of this many rows. Matmul kernels
    #: run faster on aligned shapes (gpt2-small on an H100: 1.11x, bench/NOTES.md);
    #: the extra rows are never a target and never sampled. 1: exactly the tokenizer
    pad_vocab_to_multiple_of: int = 64


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
    #: true | false | "auto" (torch.compile the model on a GPU; it costs a minute of
    #: compilation at the start, so it pays off on long runs, not on CPU demos)
    compile: Any = False
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
    #: prompted scenarios, run besides "unconditional"; each a mapping with keys
    #: name, prompts_file (JSONL of {"prompt": ...}: a path or a name under configs/,
    #: e.g. prompts/pep8_functions.jsonl), control_position (before | after: where
    #: <|aligned|> goes relative to the prompt, for conditional runs), score_with_prompt
    #: (score prompt + continuation), and optionally num_samples and max_new_tokens
    scenarios: list = field(default_factory=list)
    #: during training, evaluate every this many optimizer steps, plus at the start and
    #: the end (a value < 1 is that fraction of the run, as transformers' eval_steps; 0: off)
    every_steps: float = 0.25
    #: unconditional samples and held-out blocks per training-time evaluation
    callback_num_samples: int = 32
    callback_heldout_blocks: int = 8
    #: KL(reference || model): the reference LM (a model directory or hub name); null: skip
    kl_reference: str | None = None
    kl_num_samples: int = 256
    #: lm-evaluation-harness tasks (needs `pip install lm-eval`); examples per task (null: all)
    lm_eval_tasks: list = field(default_factory=list)
    lm_eval_limit: int | None = None
    #: red teaming (`phf redteam`): the red LM, the seed prompts (JSONL; null: the first
    #: scenario's prompts) and phf.evaluation.red_team.RedTeamConfig fields (rounds, pool_size,
    #: new_prompts_per_round, fewshot_temperature, ...)
    red_lm: str | None = None
    red_team_prompts: str | None = None
    red_team: dict = field(default_factory=dict)


@dataclass
class Config:
    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
>>>>>>> parity

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
        if objective.get("name", "mle") not in OBJECTIVES:
            # checked here, so that the message names the choices instead of pydantic's tag error
            raise ConfigError(f"objective.name: {objective.get('name')!r} is not one of {', '.join(OBJECTIVES)}")
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
    loc = [p for p in err["loc"] if not (isinstance(p, str) and p in OBJECTIVES and _is_tag(err["loc"], p))]
    key = _dotted(loc)
    if err["type"] == "extra_forbidden":
        known = _fields_at(loc[:-1], raw)
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"; did you mean {_dotted([*loc[:-1], close[0]])!r}?" if close else ""
        if loc[:1] == ["objective"] and not close:
            hint = f" (objective {raw['objective'].get('name', 'mle')!r} takes: {', '.join(known)})"
        return f"unknown config key {key!r}{hint}"
    value = err.get("input")
    return f"{key}: {err['msg'][0].lower() + err['msg'][1:]}, got {value!r}"


def _dotted(loc: list) -> str:
    """("eval", "scenarios", 0, "name") -> "eval.scenarios[0].name"."""
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[")


def _is_tag(loc: tuple, part: str) -> bool:
    return len(loc) > 1 and loc[0] == "objective" and loc[1] == part


def _fields_at(path: list, raw: dict) -> list[str]:
    """The field names of the section at `path` ("objective" depends on its name)."""
    model: type[BaseModel] = Config
    for part in path:
        if isinstance(part, int):
            continue
        if model is Config and part == "objective":
            name = (raw.get("objective") or {}).get("name", "mle")
            model = OBJECTIVE_CLASSES.get(name, MLEConfig)
            continue
<<<<<<< HEAD
        annotation = model.model_fields[part].annotation
        sub = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)]
        model = next((a for a in sub if issubclass(a, BaseModel)), None)
        if model is None:
            return []
    return list(model.model_fields)
=======
        value = _coerce(value, tp)
        if not _type_ok(value, tp):
            problems.append(f"{dotted}: expected {_type_name(tp)}, got {value!r}")
            continue
        kwargs[key] = value
    if top and problems:
        raise ConfigError(problems)
    return cls(**kwargs)


def _type_name(tp) -> str:
    return str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")


def validate(cfg: Config) -> None:
    """Impossible values, one message each naming the key; all raised together."""
    problems: list[str] = []

    def check(cond: bool, key: str, message: str) -> None:
        if not cond:
            problems.append(f"{key}: {message}")

    def positive(value, key: str, allow_none: bool = False, strict: bool = True) -> None:
        if value is None and allow_none:
            return
        check(value > 0 if strict else value >= 0, key, f"must be {'>' if strict else '>='} 0, got {value!r}")

    o, t, e, d, k = cfg.objective, cfg.training, cfg.eval, cfg.data, cfg.tokenizer
    check(o.name in OBJECTIVES, "objective.name", f"{o.name!r} is not one of {', '.join(OBJECTIVES)}")
    check(o.threshold is None or o.threshold >= 0, "objective.threshold", "must be >= 0 (scores are >= 0)")
    check(o.percentile is None or 0 <= o.percentile <= 100, "objective.percentile", "must be in [0, 100]")
    check(o.threshold is None or o.percentile is None, "objective.percentile",
          "set either objective.threshold or objective.percentile, not both")
    check(0 <= o.drop_token_fraction <= 1, "objective.drop_token_fraction", "must be in [0, 1]")
    positive(o.beta, "objective.beta")
    check(o.weighting in ("auto", "threshold", "score"), "objective.weighting",
          f"{o.weighting!r} is not one of auto, threshold, score")
    check(0 < o.min_one_minus_p < 1, "objective.min_one_minus_p", f"must be in (0, 1), got {o.min_one_minus_p!r}")
    check(o.value_head in ("sigmoid", "linear"), "objective.value_head", f"{o.value_head!r} is not one of sigmoid, linear")
    positive(o.max_weight, "objective.max_weight", allow_none=True)
    if o.name == "awr":
        check(0 <= o.alpha <= 1, "objective.alpha", f"AWR's alpha must be in [0, 1], got {o.alpha!r}")
    else:
        check(o.alpha >= 0, "objective.alpha", f"must be >= 0, got {o.alpha!r}")
    for name, value in cfg.task.thresholds.items():
        check(name in OBJECTIVES, f"task.thresholds.{name}", f"not an objective ({', '.join(OBJECTIVES)})")
        check(isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0,
              f"task.thresholds.{name}", "must be a number >= 0")
    check(cfg.task.hit_threshold >= 0, "task.hit_threshold", "must be >= 0 (scores are >= 0)")
    check(cfg.task.combine in ("max", "weighted_sum"), "task.combine",
          f"{cfg.task.combine!r} is not one of max, weighted_sum")
    for name in o.attributes or ():
        check(name in cfg.task.attributes, "objective.attributes",
              f"{name!r} is not one of task.attributes ({', '.join(cfg.task.attributes) or 'none'})")
    for name, spec in cfg.task.attributes.items():
        key = f"task.attributes.{name}"
        if not isinstance(spec, dict) or set(spec) - {"threshold", "drop_token_fraction"}:
            problems.append(f"{key}: expected a mapping with threshold and drop_token_fraction")
            continue
        check(spec.get("threshold", 0.0) >= 0, f"{key}.threshold", "must be >= 0 (scores are >= 0)")
        check(0 <= spec.get("drop_token_fraction", 0.0) <= 1, f"{key}.drop_token_fraction", "must be in [0, 1]")
    check(0 <= d.heldout_fraction < 1, "data.heldout_fraction", "must be in [0, 1)")
    check(d.source in ("stdlib", "dir", "jsonl", "hf", "scored"), "data.source",
          f"{d.source!r} is not one of stdlib, dir, jsonl, hf, scored")
    check(d.source in ("stdlib", "scored") or bool(d.path), "data.path", f"must be set for data.source {d.source!r}")
    positive(d.max_documents, "data.max_documents", allow_none=True)
    positive(d.max_bytes, "data.max_bytes", allow_none=True)
    positive(d.num_workers, "data.num_workers", allow_none=True)
    check(bool(d.text_field), "data.text_field", "must not be empty")
    check(k.vocab_size > 256, "tokenizer.vocab_size", "must be > 256 (the byte alphabet plus special tokens)")
    positive(k.train_max_bytes, "tokenizer.train_max_bytes")
    check(t.block_size >= 8, "training.block_size", "must be >= 8")
    check(t.per_device_batch_size >= 1, "training.per_device_batch_size", "must be >= 1")
    check(t.effective_batch_size >= t.per_device_batch_size, "training.effective_batch_size",
          f"must be >= per_device_batch_size ({t.per_device_batch_size})")
    check(t.effective_batch_size % max(t.per_device_batch_size, 1) == 0, "training.effective_batch_size",
          f"must be a multiple of per_device_batch_size ({t.per_device_batch_size})")
    check(t.num_tokens >= t.effective_batch_size * t.block_size, "training.num_tokens",
          f"{t.num_tokens} is smaller than one batch ({t.effective_batch_size} x {t.block_size} tokens)")
    positive(t.learning_rate, "training.learning_rate")
    check(0 <= t.warmup_ratio < 1, "training.warmup_ratio", "must be in [0, 1)")
    positive(t.weight_decay, "training.weight_decay", strict=False)
    positive(t.max_grad_norm, "training.max_grad_norm")
    check(t.logging_steps >= 1, "training.logging_steps", "must be >= 1")
    check(t.save_steps is None or t.save_steps >= 1, "training.save_steps", "must be >= 1 (or null: no checkpoints)")
    positive(t.dataloader_num_workers, "training.dataloader_num_workers", strict=False)
    check(t.bf16 in (True, False, "auto"), "training.bf16", "must be true, false or auto")
    check(t.compile in (True, False, "auto"), "training.compile", "must be true, false or auto")
    check(isinstance(cfg.model.pad_vocab_to_multiple_of, int) and cfg.model.pad_vocab_to_multiple_of >= 1,
          "model.pad_vocab_to_multiple_of", "must be a whole number >= 1")
    positive(e.temperature, "eval.temperature")
    check(0 < e.top_p <= 1, "eval.top_p", "must be in (0, 1]")
    check(e.group_size >= 1, "eval.group_size", "must be >= 1")
    check(e.num_samples >= 1, "eval.num_samples", "must be >= 1")
    check(e.max_new_tokens >= 1, "eval.max_new_tokens", "must be >= 1")
    check(e.batch_size >= 1, "eval.batch_size", "must be >= 1")
    positive(e.heldout_max_tokens, "eval.heldout_max_tokens", strict=False)
    problems += _eval_problems(e)
    if problems:
        raise ConfigError(problems)


SCENARIO_KEYS = ("name", "prompts_file", "control_position", "score_with_prompt", "num_samples", "max_new_tokens")


def _eval_problems(e: EvalConfig) -> list[str]:
    """Scenarios, the training-time evaluation, KL and red-teaming settings."""
    problems = []

    def check(cond: bool, key: str, message: str) -> None:
        if not cond:
            problems.append(f"{key}: {message}")

    check(e.every_steps >= 0 and (e.every_steps < 1 or float(e.every_steps).is_integer()), "eval.every_steps",
          f"must be a whole number of steps, a fraction of the run < 1, or 0 (off), got {e.every_steps!r}")
    check(e.callback_num_samples >= 1, "eval.callback_num_samples", "must be >= 1")
    check(e.callback_heldout_blocks >= 0, "eval.callback_heldout_blocks", "must be >= 0")
    check(e.kl_num_samples >= 2, "eval.kl_num_samples", "must be >= 2")
    check(e.lm_eval_limit is None or e.lm_eval_limit >= 1, "eval.lm_eval_limit", "must be >= 1 (or null: all)")
    check(all(isinstance(t, str) and t for t in e.lm_eval_tasks), "eval.lm_eval_tasks", "must be task names")
    names = {"unconditional"}
    for i, s in enumerate(e.scenarios):
        key = f"eval.scenarios[{i}]"
        if not isinstance(s, dict):
            problems.append(f"{key}: expected a mapping with keys {', '.join(SCENARIO_KEYS)}")
            continue
        unknown = sorted(set(s) - set(SCENARIO_KEYS))
        check(not unknown, key, f"unknown key(s) {', '.join(map(str, unknown))}; known: {', '.join(SCENARIO_KEYS)}")
        name = s.get("name")
        check(isinstance(name, str) and name.replace("-", "").replace("_", "").isalnum() and name not in names,
              f"{key}.name", f"must be a unique name of letters, digits, - and _ (not 'unconditional'), got {name!r}")
        names.add(name)
        check(s.get("control_position", "before") in ("before", "after"), f"{key}.control_position",
              f"must be before or after, got {s.get('control_position')!r}")
        check(isinstance(s.get("score_with_prompt", False), bool), f"{key}.score_with_prompt", "must be true or false")
        for count in ("num_samples", "max_new_tokens"):
            value = s.get(count, 1)
            check(isinstance(value, int) and not isinstance(value, bool) and value >= 1, f"{key}.{count}",
                  f"must be an integer >= 1, got {value!r}")
        problems += _prompts_file_problems(s.get("prompts_file"), f"{key}.prompts_file")
    if e.red_team_prompts is not None:
        problems += _prompts_file_problems(e.red_team_prompts, "eval.red_team_prompts")
    if e.red_team:
        from phf.evaluation.red_team import RedTeamConfig  # the fields live with the algorithm

        known = [f.name for f in dataclasses.fields(RedTeamConfig)]
        for name in e.red_team:
            close = difflib.get_close_matches(str(name), known, n=1)
            check(name in known, f"eval.red_team.{name}",
                  "unknown red-teaming setting" + (f"; did you mean {close[0]!r}?" if close else ""))
    return problems


def _prompts_file_problems(name, key: str) -> list[str]:
    if not isinstance(name, str) or not name:
        return [f"{key}: must name a JSONL file of {{\"prompt\": ...}} lines"]
    try:
        resolve_config_path(name)
    except ConfigError:
        return [f"{key}: {name!r} not found (neither a path nor a name under {CONFIG_DIR})"]
    return []


#: suffixes that make a path a local file, never a hub name
LOCAL_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv", ".txt", ".arrow", ".yaml", ".safetensors")


def looks_local(name: str) -> bool:
    """Whether `name` can only mean a local path, so that a missing one is an error and
    never a hub look-up. A hub name is `name` or `owner/name`; a path with a file suffix,
    more than one slash, a leading `/`, `.` or `~`, or whose first part is an existing
    local directory (`runs/missing`) is local."""
    return (name.startswith(("/", ".", "~")) or name.endswith(LOCAL_SUFFIXES) or name.count("/") > 1
            or ("/" in name and Path(name.split("/")[0]).is_dir()))
>>>>>>> parity


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
