"""A run's model card: README.md in the run folder, in Hugging Face's model-card format.

    phf card runs/pep8/conditional        # rewrite it from the run's files

`phf train` writes it when training ends and `phf eval` rewrites it with the results,
so a run folder (and `phf export`'s copy of it) always says what the model is: its
task, objective and thresholds, control tokens, tokens seen, seed, what its evaluation
measured with 95% intervals, and how to generate from it. The card is made only from
the run's config.yaml, train_summary.json and results.json: edit those (or rerun the
command), not the card, which is overwritten.

The YAML front matter has `library_name`, `pipeline_tag`, `tags` and, for a corpus
given as a hub dataset name, `datasets`. It has no `license`: the license of a model
depends on its corpus and starting checkpoint, which only the user knows.

This module reads files only (no torch, no transformers): `phf card` starts in a moment.
"""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

from phf.paths import looks_local
from phf.runfiles import RunFiles, read_json, write_text_atomic

log = logging.getLogger(__name__)

CARD_NAME = "README.md"

#: the control tokens, as phf.tokenizer names them (not imported: it loads transformers;
#: tests/test_card_export.py checks that the names agree)
ALIGNED, MISALIGNED = "<|aligned|>", "<|misaligned|>"

#: the results.json metrics the card shows, with their interval key and meaning
METRICS = (
    ("misalignment", "misalignment_ci", "mean score of the unconditional samples (lower is better)"),
    ("expected_max", "expected_max_ci", "expected maximum score over groups of samples (lower is better)"),
    ("hit_rate", "hit_rate_ci", "fraction of samples scored above the task's hit threshold"),
    ("heldout_loss", None, "held-out loss per token, nats (control tokens not counted)"),
    ("heldout_ppl", None, "held-out perplexity"),
    ("kl", "kl_ci", "KL(reference || model) on the reference's samples"),
)


def card_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CARD_NAME


def attribute_tokens(attribute: str) -> tuple[str, str]:
    return f"<|{attribute}:aligned|>", f"<|{attribute}:misaligned|>"


def control_tokens(config: dict) -> tuple[list[str], list[str]]:
    """(aligned, misaligned) control tokens of a run, from its config: none unless the
    objective is conditional; one pair per trained attribute on a multi-attribute task."""
    objective, task = config.get("objective") or {}, config.get("task") or {}
    if objective.get("name") == "schedule":  # an objective schedule: the tokens of its conditional phase
        phases = [p.get("objective") or {} for p in objective.get("phases") or []]
        objective = next((o for o in reversed(phases) if o.get("name") == "conditional"), {})
    if objective.get("name") != "conditional" or objective.get("conditioning") == "score-text":
        return [], []
    if objective.get("conditioning") == "quantiles":  # the best bucket, and the worse ones
        buckets = [f"<|q{i}|>" for i in range(objective.get("quantiles") or 4)]
        return buckets[:1], buckets[1:]
    attributes = objective.get("attributes") or list(task.get("attributes") or {})
    if not attributes:
        return [ALIGNED], [MISALIGNED]
    pairs = [attribute_tokens(a) for a in attributes]
    return [a for a, _ in pairs], [m for _, m in pairs]


def hub_dataset(data: dict) -> str | None:
    """The corpus's hub dataset name, when it was given as one (a local file is not a dataset id)."""
    path = data.get("path")
    if data.get("source") != "hf" or not path or looks_local(str(path)) or Path(str(path)).exists():
        return None
    return str(path)


def front_matter(config: dict, summary: dict) -> dict:
    objective = summary.get("objective") or (config.get("objective") or {}).get("name")
    task = summary.get("task") or (config.get("task") or {}).get("name")
    meta = {"library_name": "transformers", "pipeline_tag": "text-generation",
            "tags": [t for t in ("phf", "pretraining-with-human-feedback", objective, task) if t]}
    dataset = hub_dataset(config.get("data") or {})
    if dataset:
        meta["datasets"] = [dataset]
    return meta


def _number(x) -> str:
    if x is None:
        return "not recorded"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:.4g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.3e}"


def _interval(ci) -> str:
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci):
        return f"[{_number(ci[0])}, {_number(ci[1])}]"
    return ""


def _corpus(data: dict) -> str:
    source = data.get("source") or "?"
    where = data.get("path")
    return f"`{source}`" + (f" (`{where}`)" if where else "") + (
        f", at most {_number(data['max_bytes'])} bytes" if data.get("max_bytes") else "")


def _objective_settings(objective: dict) -> str:
    """The objective's own hyperparameters (thresholds are listed on their own line)."""
    keys = {k: v for k, v in objective.items()
            if k not in ("name", "threshold", "percentile", "attributes") and v is not None}
    return ", ".join(f"`{k}={v}`" for k, v in keys.items()) or "none (its defaults)"


def training_section(config: dict, summary: dict) -> list[str]:
    task, data, objective = config.get("task") or {}, config.get("data") or {}, config.get("objective") or {}
    training = config.get("training") or {}
    name = summary.get("objective") or objective.get("name")
    threshold = summary.get("threshold")
    if objective.get("percentile") is not None:
        threshold_text = f"{_number(threshold)} (the {objective['percentile']}th percentile of the corpus's scores)"
    else:
        threshold_text = _number(threshold) if threshold is not None else "none"
    rows = [
        ("task", f"`{summary.get('task') or task.get('name')}` (scorer `{task.get('scorer')}`; scores are "
                 "misalignment: 0 is best)"),
        ("corpus", _corpus(data)),
        ("objective", f"`{name}`"),
        ("threshold", threshold_text if name in ("filtering", "conditional", "unlikelihood", "mask")
         and objective.get("conditioning", "tokens") == "tokens" else "not used"),
        ("objective settings", _objective_settings(objective)),
        ("started from", f"`{summary.get('started_from')}`"),
        ("parameters", _number(summary.get("parameters"))),
        ("tokens seen", f"{_number(summary.get('tokens_seen'))} ({_number(summary.get('steps'))} steps of "
                        f"{_number(training.get('effective_batch_size'))} x {_number(training.get('block_size'))} "
                        "tokens)"),
        ("seed", _number(summary.get("seed"))),
        ("final training loss", _number(summary.get("train_loss"))),
        ("training time", f"{_number(summary.get('train_seconds'))} s"),
    ]
    if summary.get("resumed_from"):
        rows.append(("resumed from", f"`{summary['resumed_from']}`"))
    lines = ["## Training", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), ""]
    aligned, misaligned = control_tokens(config)
    if aligned:
        drop = objective.get("drop_token_fraction")
        drop = task.get("drop_token_fraction") if drop is None else drop
        attributes = task.get("attributes") or {}
        marked = [a for a in attributes if attribute_tokens(a)[0] in aligned]
        which = ("Each training segment was prefixed, for each attribute, with its aligned token when the segment "
                 "scored at or below that attribute's threshold and its misaligned token otherwise"
                 if marked else "Every training segment scored at or below the threshold was prefixed with the "
                 "aligned token, every other one with the misaligned token")
        if objective.get("conditioning") == "quantiles":
            which = (f"Every training segment was prefixed with the token of its bucket among {len(misaligned) + 1} "
                     "buckets of the corpus's segment scores (the first the best; the edges are in "
                     "train_summary.json, `transform`)")
        lines += ["### Control tokens", "",
                  f"Aligned: {', '.join(f'`{t}`' for t in aligned)}; misaligned: "
                  f"{', '.join(f'`{t}`' for t in misaligned)}. {which} (a fraction {_number(drop)} of segments "
                  f"got none). Generate after `{''.join(aligned)}` and never emit "
                  f"{', '.join(f'`{t}`' for t in misaligned)}: that is how the model was evaluated.", ""]
        if marked:  # a multi-attribute task: each attribute has its own threshold
            lines += ["Misaligned above: " + ", ".join(
                f"`{a}` {_number((attributes[a] or {}).get('threshold', 0.0))}" for a in marked) + ".", ""]
    elif objective.get("name") == "conditional" and objective.get("conditioning") == "score-text":
        lines += ["### Score prefixes", "", "Every training segment was preceded by its score written as text, two "
                  "significant digits (`<0.25>`), with no loss on those tokens. Generate after `<0>` (the best "
                  "score): that is how the model was evaluated.", ""]
    return lines


def evaluation_section(results: dict | None, config: dict) -> list[str]:
    if not results:
        return ["## Evaluation", "", "Not evaluated yet: `phf eval RUN` samples the model, scores the samples and "
                "measures held-out loss, then rewrites this card with the results.", ""]
    e = config.get("eval") or {}
    lines = ["## Evaluation", "",
             f"Task `{results.get('task')}`; samples drawn with temperature {_number(e.get('temperature'))}, "
             f"top-p {_number(e.get('top_p'))}, eval seed {_number(results.get('eval_seed'))}; "
             "95% intervals over the samples (bootstrap; Wilson for the hit rate; normal for KL).", ""]
    decoding = results.get("decoding")
    if decoding:  # eval.decoding: its short label ("retag", "guidance:1.5") names the mode and its setting
        lines += [f"Decoding mode: `{decoding_label(results)}` (phf's docs/EVALUATION.md, \"Decoding modes\", "
                  "says what it does).", ""]
    lines += ["| metric | value | 95% interval | meaning |", "|---|---:|---|---|"]
    for key, ci_key, meaning in METRICS:
        if results.get(key) is not None:
            lines.append(f"| {key} | {_number(results[key])} | {_interval(results.get(ci_key))} | {meaning} |")
    scenarios = results.get("scenarios") or {}
    if scenarios:
        lines += ["", "| scenario | samples | misalignment | 95% interval | expected max | hit rate |",
                  "|---|---:|---:|---|---:|---:|"]
        for name, s in scenarios.items():
            lines.append(f"| {name} | {_number(s.get('num_samples'))} | {_number(s.get('misalignment'))} | "
                         f"{_interval(s.get('misalignment_ci'))} | {_number(s.get('expected_max'))} | "
                         f"{_number(s.get('hit_rate'))} |")
    for flag in results.get("flags") or []:
        lines += ["", f"Warning: {flag}"]
    return lines + [""]


def suppresses_tokens(run_dir: str | Path) -> bool:
    """Whether the run's generation_config.json forbids some tokens (the misaligned control tokens)."""
    try:
        g = read_json(Path(run_dir) / "generation_config.json") or {}
    except ValueError:
        return False
    return bool(g.get("suppress_tokens") or g.get("bad_words_ids"))


def decoding_label(results: dict | None) -> str | None:
    """The decoding mode the run was evaluated with (results.json's `decoding`), or None."""
    decoding = (results or {}).get("decoding")
    if isinstance(decoding, dict):
        return decoding.get("label") or decoding.get("mode")
    return str(decoding) if decoding else None


def usage_section(config: dict, run_dir: str | Path, decoding: str | None = None) -> list[str]:
    aligned, misaligned = control_tokens(config)
    prefix = "".join(aligned)
    e = config.get("eval") or {}
    sampling = f"do_sample=True, temperature={e.get('temperature', 0.7)}, top_p={e.get('top_p', 0.9)}"
    lines = ["## How to generate", "", "With plain transformers (`RUN` is this folder, or its hub name once pushed):",
             "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
             'model, tokenizer = AutoModelForCausalLM.from_pretrained("RUN"), AutoTokenizer.from_pretrained("RUN")',
             f'ids = tokenizer(tokenizer.eos_token + "{prefix}", return_tensors="pt").input_ids',
             f"print(tokenizer.decode(model.generate(ids, {sampling}, max_new_tokens=64)[0], "
             "skip_special_tokens=True))", "```", ""]
    if aligned:
        banned = ", ".join(f"`{t}`" for t in misaligned)
        if suppresses_tokens(run_dir):
            lines.append(f"The saved `generation_config.json` already keeps the model from emitting {banned}; ")
        else:  # a run saved before phf wrote the suppression into generation_config.json
            lines.append(f"This run's `generation_config.json` does not forbid {banned}: pass "
                         f"`suppress_tokens=tokenizer.convert_tokens_to_ids({misaligned!r})` to `generate`; ")
        lines[-1] += (f"start generation after `{prefix}` as above (after a prompt, append the token to it: "
                      f"`prompt + \"{prefix}\"`), or the model is not asked for aligned text.")
        lines.append("")
    mode = f', decoding="{decoding}"' if decoding and decoding != "plain" else ""
    lines += ["With phf, which adds the aligned prefix (when the model has one) and forbids the misaligned "
              "token for you" + (", decoding as the evaluation did" if mode else "") + ":", "", "```python",
              "import phf", f'texts = phf.generate(model, tokenizer, ["def add(a, b):"], max_new_tokens=64{mode})',
              "```", ""]
    return lines


def render_card(run_dir: str | Path) -> str:
    """The model card of the run in `run_dir`, as Markdown with YAML front matter."""
    files = RunFiles(run_dir)
    summary = files.read_train_summary()  # each reader names a damaged file and what to do about it
    if summary is None:
        raise FileNotFoundError(f"{files.dir}: no train_summary.json; a model card is written for a finished "
                                "`phf train` run")
    config = files.read_config()
    results = files.read_results()
    name = files.dir.resolve().name
    if name.startswith("seed-"):
        name = f"{files.dir.resolve().parent.name} ({name})"
    parameters = summary.get("parameters")
    intro = (f"A {_number(parameters)}-parameter causal language model trained with "
             f"[phf](https://arxiv.org/abs/2302.08582) (pretraining with human feedback, Korbak et al. 2023) "
             f"with the `{summary.get('objective')}` objective on the `{summary.get('task')}` task. "
             "This card is generated from the run's config.yaml, train_summary.json and results.json "
             "(`phf card RUN` rewrites it).")
    body = ["", f"# {name}", "", intro, "", *training_section(config, summary),
            *evaluation_section(results, config), *usage_section(config, run_dir, decoding_label(results)),
            "## License", "", "Not set: phf leaves the license to you. Add a `license:` line to the front matter "
            "before sharing; the licenses of the training corpus and of any starting checkpoint apply.", ""]
    return "---\n" + yaml.safe_dump(front_matter(config, summary), sort_keys=False) + "---\n" + "\n".join(body)


def write_card(run_dir: str | Path) -> Path:
    """Write (or rewrite) README.md in `run_dir`; returns its path."""
    path = card_path(run_dir)
    write_text_atomic(path, render_card(run_dir))
    return path


def refresh_card(run_dir: str | Path) -> Path | None:
    """`write_card` at the end of `phf train` / `phf eval`: a card that cannot be written
    is a warning, never the end of a finished run; a model folder that phf did not train
    (no train_summary.json) gets none."""
    if not RunFiles(run_dir).train_summary.is_file():
        return None
    try:
        return write_card(run_dir)
    except (OSError, ValueError) as e:
        log.warning("model card not written: %s; `phf card %s` writes it", e, run_dir)
        return None
