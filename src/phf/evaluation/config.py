"""Evaluation settings: sampling, scenarios, the training-time evaluation, KL,
lm-evaluation-harness and red teaming."""

from __future__ import annotations

import difflib
from typing import Literal

from pydantic import Field

from phf.config_base import Section
from phf.errors import ConfigError
from phf.paths import CONFIG_DIR, resolve_config_path

UNCONDITIONAL = "unconditional"


class ScenarioConfig(Section):
    """A way of sampling: unconditional, or continuing the prompts of a JSONL file."""

    name: str
    """A unique name of letters, digits, - and _."""
    prompts_file: str | None = None
    """JSONL of {"prompt": ...} lines: a path or a name under phf's configs
    (e.g. prompts/pep8_functions.jsonl); null: unconditional."""
    control_position: Literal["before", "after"] = "before"
    """Where <|aligned|> goes relative to the prompt, for conditional runs."""
    score_with_prompt: bool = False
    """Score prompt + continuation (the paper does so for PEP8 functions)."""
    num_samples: int | None = Field(None, ge=1)
    """Samples of this scenario (null: eval.num_samples)."""
    max_new_tokens: int | None = Field(None, ge=1)
    """Tokens per sample (null: eval.max_new_tokens)."""


class RedTeamConfig(Section):
    """Red teaming (`phf redteam`): a red LM grows a pool of adversarial prompts."""

    rounds: int = Field(10, ge=0)
    """Rounds of new prompts."""
    new_prompts_per_round: int = Field(512, ge=1)
    """Prompts the red LM writes per round."""
    pool_size: int = Field(2000, ge=1)
    """Prompts kept in the pool (the highest-scoring)."""
    num_fewshot: int = Field(4, ge=1)
    """Pool prompts shown to the red LM per proposal."""
    fewshot_temperature: float = Field(0.1, gt=0)
    """Softmax temperature over pool scores; must suit the score scale (PEP8 scores are
    violations per character, ~0.01: use ~0.01; toxicity probabilities: 0.1)."""
    instruction: str = "List of prompts:"
    """The line that opens the red LM's few-shot prompt."""
    red_max_new_tokens: int = Field(48, ge=1)
    """Tokens per proposed prompt."""
    red_temperature: float = Field(1.0, gt=0)
    """The red LM's sampling temperature."""
    red_top_p: float = Field(0.95, gt=0, le=1)
    """The red LM's nucleus."""
    answers_per_prompt: int = Field(1, ge=1)
    """Answers sampled from the model per prompt."""
    answer_max_new_tokens: int | None = Field(None, ge=1)
    """Tokens per answer (null: eval.max_new_tokens)."""
    answer_temperature: float | None = Field(None, gt=0)
    """The model's sampling temperature (null: eval.temperature)."""
    answer_top_p: float | None = Field(None, gt=0, le=1)
    """The model's nucleus (null: eval.top_p)."""
    score_with_prompt: bool | None = None
    """Score prompt + answer together (null: as the seed prompts' scenario says)."""
    group_size: int | None = Field(None, ge=1)
    """Expected maximum over groups of this many prompts (null: eval.group_size)."""
    max_attempts: int = Field(5, ge=1)
    """Red LM batches of re-draws for empty or duplicate proposals, per round."""
    batch_size: int = Field(64, ge=1)
    """Sequences per generation batch."""
    seed: int | None = None
    """Seed of the prompt draws and sampling (null: eval.seed)."""

    def filled(self, max_new_tokens: int = 128, temperature: float = 0.7, top_p: float = 0.9,
               group_size: int = 25, seed: int = 0, score_with_prompt: bool = False) -> "RedTeamConfig":
        """This config with every null setting taken from the evaluation's (or the defaults)."""
        defaults = dict(answer_max_new_tokens=max_new_tokens, answer_temperature=temperature, answer_top_p=top_p,
                        group_size=group_size, seed=seed, score_with_prompt=score_with_prompt)
        return self.model_copy(update={k: v for k, v in defaults.items() if getattr(self, k) is None})


DECODING_MODES = ("plain", "retag", "guidance", "tag-aware", "rerank")
#: modes that use the run's control tokens (refused on a run without them)
TAG_MODES = ("retag", "guidance", "tag-aware")


class DecodingConfig(Section):
    """How samples are decoded (evaluation, the training-time evaluation, conditioning,
    red teaming); `docs/EVALUATION.md` ("Decoding modes") says what each mode does."""

    mode: str = "plain"
    """plain (the aligned tag at the start only) | retag (the aligned tag again at every
    segment boundary) | guidance (aligned stream pushed away from a negative stream) |
    tag-aware (resample a segment the model itself judges misaligned) | rerank (best of
    `n` samples by the task's scorer or by the model's own judgement)."""
    scale: float = Field(1.5, ge=0)
    """guidance: g in l_aligned + g * (l_aligned - l_negative); 0 is plain decoding."""
    negative: Literal["misaligned", "none"] = "misaligned"
    """guidance: the negative stream starts after <|misaligned|>, or after no tag."""
    retag: bool = True
    """guidance: re-tag both streams at every segment boundary (the main one with the aligned
    tags, the negative one with the misaligned ones), as in training. false: the tags at the
    start only, as transformers' guidance does ("guidance-untagged"); the model may then not
    place the tags it learned to expect, and its samples degenerate (docs/EVALUATION.md)."""
    threshold: float = Field(0.5, ge=0, le=1)
    """tag-aware: resample a segment whose judged probability of being misaligned is above this."""
    max_tries: int = Field(4, ge=1)
    """tag-aware: resamples of one segment at most (the sample keeps the last try)."""
    judge: Literal["next-tag", "ratio"] = "next-tag"
    """tag-aware: next-tag (the model's probability of <|misaligned|> at the boundary after
    the segment; one stream) | ratio (the segment's likelihood after <|misaligned|> vs after
    <|aligned|>, from a second stream)."""
    n: int = Field(4, ge=1)
    """rerank: candidates drawn per sample."""
    rank_by: Literal["scorer", "model"] = "scorer"
    """rerank: keep the candidate the task's scorer rates best, or the one the model itself
    judges least misaligned (likelihood after <|misaligned|> vs <|aligned|>; no scorer call)."""

    def problems(self) -> list[str]:
        if self.mode in DECODING_MODES:
            return []
        close = difflib.get_close_matches(self.mode, DECODING_MODES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return [f"eval.decoding.mode: {self.mode!r} is not one of {', '.join(DECODING_MODES)}{hint}"]

    @property
    def uses_tags(self) -> bool:
        return self.mode in TAG_MODES or (self.mode == "rerank" and self.rank_by == "model")

    def label(self) -> str:
        """A short name for tables: plain, retag, guidance:1.5, tag-aware, rerank:8, ..."""
        if self.mode == "guidance":
            return (f"guidance{'' if self.retag else '-untagged'}:{self.scale:g}"
                    + ("" if self.negative == "misaligned" else "-none"))
        if self.mode == "rerank":
            return f"rerank:{self.n}" + ("" if self.rank_by == "scorer" else "-model")
        if self.mode == "tag-aware":
            return f"tag-aware:{self.threshold:g}" + ("" if self.judge == "next-tag" else "-ratio")
        return self.mode



def parse_decoding(text: str) -> DecodingConfig:
    """A decoding mode written on the command line: plain | retag | guidance[:G[:none]] |
    guidance-untagged[:G[:none]] | tag-aware[:THRESHOLD[:ratio]] | rerank[:N[:model]], e.g.
    guidance:2, rerank:8, tag-aware:0.3:ratio."""
    mode, *args = text.strip().split(":")
    untagged = mode == "guidance-untagged"
    mode = "guidance" if untagged else mode
    keys = {"guidance": ("scale", "negative"), "tag-aware": ("threshold", "judge"), "rerank": ("n", "rank_by")}
    if problems := DecodingConfig(mode=mode).problems():  # an unknown mode first, with its did-you-mean
        raise ConfigError(problems)
    if len(args) > len(keys.get(mode, ())):
        raise ConfigError(f"decoding {text!r}: {mode} takes at most {len(keys.get(mode, ()))} settings "
                          f"({':'.join(keys.get(mode, ())) or 'none'})")
    values = dict(zip(keys.get(mode, ()), args))
    try:
        decoding = DecodingConfig(mode=mode, **values, **({"retag": False} if untagged else {}))
    except ValueError as e:  # pydantic's ValidationError
        raise ConfigError(f"decoding {text!r}: {e.errors()[0]['loc'][0]}: {e.errors()[0]['msg']}") from None
    if problems := decoding.problems():
        raise ConfigError(problems)
    return decoding


class EvalConfig(Section):
    num_samples: int = Field(256, ge=1)
    """Unconditional samples per run (the paper: 4096)."""
    max_new_tokens: int = Field(128, ge=1)
    """Tokens per sample."""
    temperature: float = Field(0.7, gt=0)
    """Sampling temperature (the paper: 0.7)."""
    top_p: float = Field(0.9, gt=0, le=1)
    """Nucleus sampling mass (the paper: 0.9)."""
    batch_size: int = Field(64, ge=1)
    """Sequences per generation batch."""
    group_size: int = Field(25, ge=1)
    """The expected maximum score is the mean over groups of this many samples."""
    heldout_max_tokens: int = Field(200_000, ge=0)
    """Held-out loss over at most this many tokens."""
    probe_segments: int = Field(2000, ge=0)
    """Linear probe (results.json `probe`): a logistic regression on the final hidden states
    of up to this many held-out segments, misaligned vs aligned (0: no probe)."""
    seed: int = 0
    """Seed of sampling."""
    scenarios: list[ScenarioConfig] = Field(default_factory=list)
    """Prompted scenarios, run besides the unconditional one."""
    every_steps: float = Field(0.25, ge=0)
    """During training, evaluate every this many optimizer steps, plus at the start and
    the end (a value < 1 is that fraction of the run; 0: off)."""
    callback_num_samples: int = Field(32, ge=1)
    """Unconditional samples per training-time evaluation."""
    callback_max_new_tokens: int = Field(64, ge=1)
    """Tokens per training-time sample, at most (also at most max_new_tokens): sampling is most
    of an evaluation's time, and the curve needs the trend, not full-length samples."""
    callback_heldout_blocks: int = Field(8, ge=0)
    """Held-out blocks per training-time evaluation."""
    kl_reference: str | None = None
    """KL(reference || model): the reference LM (a model directory or hub name); null: skip."""
    kl_num_samples: int = Field(256, ge=2)
    """Reference samples for the KL estimate."""
    lm_eval_tasks: list[str] = Field(default_factory=list)
    """lm-evaluation-harness tasks (needs `pip install lm-eval`)."""
    lm_eval_limit: int | None = Field(None, ge=1)
    """Examples per lm-eval task (null: all)."""
    red_lm: str | None = None
    """Red teaming: the red LM (a model directory or hub name)."""
    red_team_prompts: str | None = None
    """Red teaming: seed prompts, JSONL (null: the first scenario's prompts)."""
    red_team: RedTeamConfig = Field(default_factory=RedTeamConfig)
    """Red-teaming settings."""
    decoding: DecodingConfig = Field(default_factory=DecodingConfig)
    """How samples are decoded: plain (the default), retag, guidance, tag-aware or rerank."""
    aligned_prefix: bool = True
    """A conditional run's samples start after its aligned prefix (<|aligned|>, <|q0|>, <0>);
    false: from the document start alone, its misaligned tokens still forbidden (does the
    model stay aligned without the prefix, e.g. after a cooldown?)."""

    def problems(self) -> list[str]:
        out = self.decoding.problems()
        if self.every_steps >= 1 and not float(self.every_steps).is_integer():
            out.append(f"eval.every_steps: must be a whole number of steps, a fraction of the run < 1, "
                       f"or 0 (off), got {self.every_steps!r}")
        # an expected maximum over groups larger than the samples would be the maximum of fewer
        # samples than it says (the training-time curve, callback_num_samples, is exempt)
        if self.group_size > self.num_samples:
            out.append(f"eval.group_size: {self.group_size} is more than eval.num_samples ({self.num_samples}), so "
                       "no whole group of samples exists; lower eval.group_size or raise eval.num_samples")
        names = {UNCONDITIONAL}
        for i, s in enumerate(self.scenarios):
            key = f"eval.scenarios[{i}]"
            if s.num_samples is not None and self.group_size > s.num_samples:
                out.append(f"{key}.num_samples: {s.num_samples} is less than eval.group_size ({self.group_size}), "
                           "so no whole group of samples exists; raise it or lower eval.group_size")
            if not s.name.replace("-", "").replace("_", "").isalnum() or s.name in names:
                out.append(f"{key}.name: must be a unique name of letters, digits, - and _ "
                           f"(not '{UNCONDITIONAL}'), got {s.name!r}")
            names.add(s.name)
            out += _prompts_file_problems(s.prompts_file, f"{key}.prompts_file")
        if self.red_team_prompts is not None:
            out += _prompts_file_problems(self.red_team_prompts, "eval.red_team_prompts")
        return out


def _prompts_file_problems(name: str | None, key: str) -> list[str]:
    if not name:
        return [f"{key}: must name a JSONL file of {{\"prompt\": ...}} lines"]
    try:
        resolve_config_path(name)
    except ConfigError:
        return [f"{key}: {name!r} not found (neither a path nor a name under {CONFIG_DIR})"]
    return []
