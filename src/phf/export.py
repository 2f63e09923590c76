"""`phf export RUN DIR`: a finished run as a folder ready to share or `push_to_hub`.

    phf export runs/pep8/conditional shared/pep8-conditional

Copies the safetensors weights, config.json, generation_config.json, the tokenizer
files and a freshly written model card (README.md), and nothing else: no optimizer
state, no checkpoints, no packed data, no samples, and no pickle files (`*.bin`, `*.pt`,
`*.pkl`, ...), which can run code when loaded. The export loads with plain
`AutoModelForCausalLM.from_pretrained(DIR)` / `AutoTokenizer.from_pretrained(DIR)`.
An AWR run's value head (a training-time critic, `value_head.*` in the weights and
`phf_value_head` in config.json) is left out, so that transformers loads the export
with no unexpected weights; the run folder keeps it.

The folder is assembled under a temporary name beside DIR and renamed at the end, so
an interrupted export leaves no half folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from phf.card import CARD_NAME, render_card
from phf.runfiles import RunFiles, write_text_atomic

#: the model files an export carries (globs in the run folder)
WEIGHTS = ("model.safetensors", "model-*.safetensors", "model.safetensors.index.json")
MODEL_FILES = ("config.json", "generation_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                   "added_tokens.json", "chat_template.jinja", "tokenizer.model", "spiece.model", "vocab.txt")
#: pickle formats: never copied, and a run whose weights are only in one of them is refused
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class ExportError(ValueError):
    """A run that cannot be exported, or a destination that would be overwritten."""


def export_files(run_dir: str | Path) -> list[Path]:
    """The files of a finished run that `export_run` copies (refuses an unfinished run)."""
    files = RunFiles(run_dir)
    if not files.dir.is_dir():
        raise ExportError(f"{files.dir}: no such run folder")
    if not files.config.is_file():
        raise ExportError(f"{files.dir}: not a phf run folder (no config.yaml)")
    if not files.train_summary.is_file():
        raise ExportError(f"{files.dir}: training did not finish (no train_summary.json); finish it with "
                          f"`phf train {files.config} --resume`, then export")
    weights = [p for pattern in WEIGHTS for p in sorted(files.dir.glob(pattern))]
    if not any(p.name.endswith(".safetensors") for p in weights):
        pickled = sorted(p.name for p in files.dir.iterdir() if p.suffix in PICKLE_SUFFIXES)
        raise ExportError(f"{files.dir}: no safetensors weights (model.safetensors)"
                          + (f"; {', '.join(pickled)} are pickle files, which phf does not export" if pickled else ""))
    if not (files.dir / "config.json").is_file():
        raise ExportError(f"{files.dir}: no config.json; the saved model is incomplete")
    tokenizer = [files.dir / f for f in TOKENIZER_FILES if (files.dir / f).is_file()]
    if not any(p.name in ("tokenizer.json", "vocab.json", "tokenizer.model", "spiece.model", "vocab.txt")
               for p in tokenizer):
        raise ExportError(f"{files.dir}: no tokenizer files (tokenizer.json, ...); the run keeps a copy in "
                          f"{files.tokenizer}")
    model = [files.dir / f for f in MODEL_FILES if (files.dir / f).is_file()]
    return weights + model + tokenizer


def _check_destination(out: Path, run_dir: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: exists and is not a folder")
    run, dest = run_dir.resolve(), out.resolve()
    if dest == run or dest in run.parents or run in dest.parents:
        raise ExportError(f"{out}: the export folder may not be the run folder, hold it, or lie inside it")
    if RunFiles(out).train_summary.exists():
        raise ExportError(f"{out}: holds a phf run; export into another folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out}: not empty; pass --overwrite to replace what it holds")


def export_run(run_dir: str | Path, out_dir: str | Path, overwrite: bool = False) -> list[Path]:
    """Copy the shareable files of the finished run in `run_dir` to `out_dir`, with a
    fresh model card; returns the exported paths. A non-empty `out_dir` is refused
    unless `overwrite` (its contents are then replaced)."""
    run_dir, out = Path(run_dir), Path(out_dir)
    sources = export_files(run_dir)
    card = render_card(run_dir)  # before anything is written: a broken config.yaml stops the export
    _check_destination(out, run_dir, overwrite)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for src in sources:
            shutil.copyfile(src, tmp / src.name)  # follows links: the export holds plain files
        _drop_value_head(tmp)
        write_text_atomic(tmp / CARD_NAME, card)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sorted(out.iterdir())


def _drop_value_head(folder: Path) -> None:
    """Remove an AWR value head from the exported weights, shard index and config."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from phf.value_head import CONFIG_KEY, PREFIX

    dropped = set()
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            names = list(f.keys())
            if not any(n.startswith(PREFIX) for n in names):
                continue
            kept = {n: f.get_tensor(n) for n in names if not n.startswith(PREFIX)}
            metadata = f.metadata()
        dropped.update(n for n in names if n.startswith(PREFIX))
        save_file(kept, str(path), metadata=metadata)
    index = folder / "model.safetensors.index.json"
    if dropped and index.is_file():
        data = json.loads(index.read_text())
        data["weight_map"] = {k: v for k, v in data.get("weight_map", {}).items() if k not in dropped}
        write_text_atomic(index, json.dumps(data, indent=2))
    config = folder / "config.json"
    data = json.loads(config.read_text())
    if CONFIG_KEY in data:
        del data[CONFIG_KEY]
        write_text_atomic(config, json.dumps(data, indent=2))
