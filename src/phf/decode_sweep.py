"""Decode-only sweeps: a sweep's trained runs evaluated again under each decoding mode.

    phf sweep --task pep8 --objectives mle,conditional --seeds 3 --decoding plain,retag,guidance:2,tag-aware,rerank:4

After the sweep (which skips what it has already trained and evaluated), every run of
every seed is evaluated under each mode into `<run>/decoding/<mode>/` (results.json and
samples; nothing is trained again, and a finished mode is not evaluated again). Modes
that use the control tokens are run on conditional-training runs with the paper's tokens
only (not under another `objective.conditioning`); plain and rerank
by the scorer on every run, so MLE + rerank is the inference-time baseline.

Each mode's evaluation uses the run's own config.yaml plus the sweep's `eval.*`
settings, with no KL (a property of the model, not of the decoding: the run's own
results have it) and no held-out loss (unchanged by decoding). Capability is instead the
samples' NLL per token under the MLE run of the same seed, which rates what each mode
wrote on one scale. The report, `decoding.md` beside the sweep's report.md, has one
table for model-only decoding and one for decoding that calls the scorer (rerank by the
scorer), each row with mean ± 95% interval over seeds, the ratio to MLE with plain
decoding (paired by seed) and the sampling cost; and the guidance-scale curve as a figure.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from phf.config import Config, load_config
from phf.evaluation.config import DecodingConfig, parse_decoding
from phf.evaluation.evaluate import evaluate_run
from phf.evaluation.intervals import compare, mean_ci
from phf.objective_config import phases_of
from phf.runfiles import RunFiles, read_json, write_json

log = logging.getLogger(__name__)

#: the columns of the decoding tables: results key (under the unconditional scenario), header, format
COLUMNS = (("misalignment", "misalignment ↓", ".5f"), ("expected_max", "expected max ↓", ".5f"),
           ("samples_nll", "NLL under MLE ↓", ".3f"), ("distinct_2", "distinct-2 ↑", ".3f"),
           ("samples_per_second", "samples/s", ".1f"), ("tokens_per_sample", "tokens sampled per sample", ".0f"),
           ("resampled_share", "resampled segments", ".3f"))


def has_tag_pair(cfg: Config) -> bool:
    """Whether the run trained the <|aligned|>/<|misaligned|> pair: conditional training with
    the paper's tokens, alone or as a phase of an objective schedule."""
    return any(o.name == "conditional" and getattr(o, "conditioning", "tokens") == "tokens"
               for _, o in phases_of(cfg.objective))


def parse_decodings(text: str) -> list[DecodingConfig]:
    """`--decoding plain,retag,guidance:2,...` -> the modes, each checked."""
    modes = [parse_decoding(t) for t in text.split(",") if t.strip()]
    labels = [m.label() for m in modes]
    if len(set(labels)) != len(labels):
        raise ValueError(f"--decoding {text!r}: a mode is named twice")
    return modes


def sweep_runs(out_dir: Path) -> list[Path]:
    """The evaluated run folders of a sweep: `<name>/seed-<s>` or `<name>`."""
    found = []
    for results in sorted(out_dir.glob("*/results.json")) + sorted(out_dir.glob("*/seed-*/results.json")):
        if (results.parent / "config.yaml").exists():
            found.append(results.parent)
    return found


def _name_and_seed(run_dir: Path, cfg: Config) -> tuple[str, int]:
    name = run_dir.parent.name if run_dir.name.startswith("seed-") else run_dir.name
    return name, cfg.training.seed


def mode_dir(run_dir: Path, decoding: DecodingConfig) -> Path:
    return run_dir / "decoding" / decoding.label().replace(":", "_")


def run_decode_sweep(out_dir: str | Path, decodings: list[DecodingConfig], eval_settings: list[str] = (),
                     timer=None) -> str:
    """Evaluate every run of the sweep in `out_dir` under each decoding mode (what is
    missing only); write decoding.md/.json and the figure; return the Markdown."""
    out_dir = Path(out_dir)
    runs = []
    for run_dir in sweep_runs(out_dir):
        cfg = load_config([str(RunFiles(run_dir).config)], list(eval_settings))
        name, seed = _name_and_seed(run_dir, cfg)
        runs.append((run_dir, cfg, name, seed))
    mle = {seed: run_dir for run_dir, _, name, seed in runs if name == "mle"}
    if not mle:
        log.warning("decoding sweep: no MLE run in %s, so no NLL under MLE and no ratio to MLE", out_dir)
    rows = []
    for run_dir, cfg, name, seed in runs:
        for decoding in decodings:
            if decoding.uses_tags and not has_tag_pair(cfg):
                continue  # no <|aligned|>/<|misaligned|> pair to use
            target = mode_dir(run_dir, decoding)
            if not RunFiles(target).results.exists():
                e = cfg.eval.model_copy(update={"decoding": decoding, "kl_reference": None})

                def evaluate(run_dir=run_dir, e=e, cfg=cfg, target=target, seed=seed):
                    return evaluate_run(run_dir, e, cfg.task, out_dir=target, nll_reference=mle.get(seed),
                                        heldout=False)

                stage = f"decode/{name}/seed-{seed}/{decoding.label()}"
                timer.run(stage, evaluate) if timer is not None else evaluate()
            rows.append(_row(read_json(RunFiles(target).results), name, seed, decoding))
    table = decoding_tables(rows)
    write_json(out_dir / "decoding.json", rows)
    figure = guidance_figure(rows, out_dir / "decoding_guidance.png")
    md = f"# Decoding modes: {out_dir.name}\n\n{table}"
    if figure:
        md += f"\n![guidance scale curve]({figure.name})\n"
    (out_dir / "decoding.md").write_text(md)
    return md


def _row(results: dict, name: str, seed: int, decoding: DecodingConfig) -> dict:
    main = results["scenarios"]["unconditional"]
    d = main.get("decoding", {})
    nll = (results.get("samples_nll_reference") or {}).get("nll")
    return {"run": name, "seed": seed, "mode": decoding.label(), "scorer": decoding.mode == "rerank"
            and decoding.rank_by == "scorer", "scale": decoding.scale if decoding.mode == "guidance" else None,
            "misalignment": main["misalignment"], "expected_max": main["expected_max"], "samples_nll": nll,
            "distinct_2": main.get("distinct_2"), "samples_per_second": d.get("samples_per_second"),
            "tokens_per_sample": d.get("sampled_tokens", 0) / max(main.get("num_samples", 1), 1),
            "resampled_share": d.get("resampled_share")}


def _cell(values: list, fmt: str) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "–"
    ci = mean_ci(values)
    return f"{ci.value:{fmt}}" + (f" ± {ci.half_width:{fmt}}" if ci.half_width is not None else "")


def _ratio_cell(rows: list[dict], reference: dict[int, float]) -> str:
    """Mean over seeds of misalignment / MLE plain's, with its t interval, and the paired verdict."""
    ratios = [r["misalignment"] / reference[r["seed"]] for r in rows if reference.get(r["seed"])]
    if not ratios:
        return "–"
    ci = mean_ci(ratios)
    text = f"{ci.value:.3f}" + (f" [{ci.lo:.3f}, {ci.hi:.3f}]" if ci.lo is not None else "")
    verdict = compare({r["seed"]: r["misalignment"] for r in rows}, reference).verdict
    return f"{text} ({verdict})" if verdict != "undecided" or len(ratios) > 1 else text


def decoding_tables(rows: list[dict]) -> str:
    """Two Markdown tables (model-only decoding; decoding that calls the scorer): a row per
    run and mode, mean ± 95% interval over seeds."""
    reference = {r["seed"]: r["misalignment"] for r in rows if r["run"] == "mle" and r["mode"] == "plain"}
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["run"], r["mode"]), []).append(r)
    headers = ["run", "decoding", "seeds", *(h for _, h, _ in COLUMNS), "misalignment / MLE plain (95%)"]
    out = []
    for title, scorer in (("Model-only decoding (no scorer call)", False), ("Decoding that calls the scorer", True)):
        lines = [f"| {' | '.join(headers)} |", "|" + "---|" * len(headers)]
        for (run, mode), group in groups.items():
            if group[0]["scorer"] != scorer:
                continue
            cells = [_cell([g[k] for g in group], fmt) for k, _, fmt in COLUMNS]
            lines.append(f"| {run} | {mode} | {len(group)} | {' | '.join(cells)} | {_ratio_cell(group, reference)} |")
        if len(lines) > 2:
            out.append(f"### {title}\n\n" + "\n".join(lines) + "\n")
    note = ("Unconditional samples. NLL under MLE: the mean per-token NLL of the samples under the MLE run of "
            "the same seed. tokens sampled per sample counts every drawn token (rerank's candidates, tag-aware's "
            "resampled segments): the sampling compute. The ratio is the mean over seeds of each seed's "
            "misalignment over MLE plain's; the verdict in brackets is the paired t-test of the difference.\n")
    return "\n".join(out) + "\n" + note


def guidance_figure(rows: list[dict], path: Path) -> Path | None:
    """Misalignment against distinct-2 and against NLL under MLE for each guidance scale,
    one line per kind of guidance (re-tagged, untagged), plain decoding as g = 0; mean ± 95%
    interval over seeds. None without two scales of one kind."""
    curves: dict[str, dict[float, list[dict]]] = {}
    for r in rows:
        if r["run"] == "conditional" and r["scale"] is not None and not r["mode"].endswith("-none"):
            curves.setdefault(r["mode"].split(":")[0], {}).setdefault(r["scale"], []).append(r)
    curves = {kind: c for kind, c in curves.items() if len(c) >= 2}
    if not curves:
        return None
    plain = [r for r in rows if r["run"] == "conditional" and r["mode"] == "plain"]
    mle = [r["misalignment"] for r in rows if r["run"] == "mle" and r["mode"] == "plain"]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "distinct_2", "distinct-2 (higher: more varied)"),
                           (axes[1], "samples_nll", "NLL per token under MLE (lower: more ordinary)")):
        for (kind, curve), style in zip(sorted(curves.items()), (("o", "-"), ("s", "--"))):
            points = ({0.0: plain} if plain else {}) | curve
            xs, ys, xe, ye = [], [], [], []
            for g in sorted(points):
                x = mean_ci([r[key] for r in points[g] if r[key] is not None] or [math.nan])
                y = mean_ci([r["misalignment"] for r in points[g]])
                xs.append(x.value), ys.append(y.value), xe.append(x.half_width or 0), ye.append(y.half_width or 0)
            ax.errorbar(xs, ys, xerr=xe, yerr=ye, marker=style[0], linestyle=style[1], capsize=3, label=kind)
            for g, x, y in zip(sorted(points), xs, ys):
                ax.annotate(f"g={g:g}", (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
        if mle:  # where MLE is, and the paper's order of magnitude below it
            ax.axhline(sum(mle) / len(mle), color="grey", linewidth=1, label="MLE, plain")
            ax.axhline(sum(mle) / len(mle) / 10, color="grey", linewidth=1, linestyle=":", label="10x below MLE")
        ax.set_xlabel(label)
        ax.set_ylabel("misalignment ↓")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle("Conditional training under guidance l_al + g (l_al - l_mis) (g = 0: plain), mean ± 95% over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def load_rows(out_dir: str | Path) -> list[dict]:
    return json.loads((Path(out_dir) / "decoding.json").read_text())
