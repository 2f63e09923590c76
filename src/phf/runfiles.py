"""A run folder's files, named in one place, and written atomically.

    runs/conditional/
      config.yaml          the merged run config             (phf train)
      train_summary.json   objective, steps, tokens, seconds  (phf train, written last)
      metrics.jsonl        one JSON line per log              (phf train)
      model.safetensors, config.json, tokenizer.json, ...     (phf train: a Hugging Face model folder)
      checkpoints/         resumable Trainer checkpoints
      data/                the run's tokenizer and packed blocks
      results.json         misalignment, held-out loss, KL    (phf eval)
      samples/<scenario>.jsonl                                (phf eval)
      redteam.json                                            (phf redteam)
      README.md            the model card                     (phf train, phf eval, phf card: phf.card)

Every JSON file is written to a temporary name and renamed, so a reader (the report,
a resumed sweep) never sees half a file, and a killed writer leaves the old file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from phf.errors import DataError


class RunFiles:
    """The paths of one run folder."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)

    @property
    def config(self) -> Path:
        return self.dir / "config.yaml"

    @property
    def train_summary(self) -> Path:
        return self.dir / "train_summary.json"

    @property
    def metrics(self) -> Path:
        return self.dir / "metrics.jsonl"

    @property
    def results(self) -> Path:
        return self.dir / "results.json"

    @property
    def redteam(self) -> Path:
        return self.dir / "redteam.json"

    @property
    def checkpoints(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def tokenizer(self) -> Path:
        """The tokenizer the packed blocks were made with."""
        return self.data / "tokenizer"

    def samples(self, scenario: str) -> Path:
        return self.dir / "samples" / f"{scenario}.jsonl"

    # the run's own files, read through one function each: a missing, cut-short or foreign
    # file is a DataError that names it and says what to do

    #: the sections every run's config.yaml has had (`phf train` writes them all, in this order,
    #: so a file without one was cut short); a section added later is not required of older runs
    CONFIG_SECTIONS = ("task", "data", "objective", "model", "tokenizer", "training", "eval")

    def read_config(self) -> dict:
        """config.yaml as a dict, with each of `CONFIG_SECTIONS`."""
        fix = (f"restore it, or train the run again into a new folder (`phf train ... training.output_dir=...`); "
               f"without it phf cannot tell how {self.dir} was trained")
        raw = read_yaml(self.config, fix)
        missing = [s for s in self.CONFIG_SECTIONS if s not in raw]
        if missing:
            raise DataError(f"{self.config}: cut short or not a phf run config (no section {', '.join(missing)}); "
                            f"{fix}", "damaged file")
        return raw

    def read_train_summary(self) -> dict | None:
        """train_summary.json (None before training finished)."""
        return read_json(self.train_summary, f"it is written last by `phf train`: train the run again "
                         f"(`phf train {self.config} --overwrite`), or restore the file")

    def read_results(self) -> dict | None:
        """results.json (None before `phf eval`)."""
        return read_json(self.results, f"evaluate the run again (`phf eval {self.dir}`), which writes it anew")

    def read_redteam(self) -> dict | None:
        """redteam.json (None before `phf redteam`)."""
        return read_json(self.redteam, f"red-team the run again (`phf redteam {self.dir}`), which writes it anew")

    def _setting(self, section: str, key: str):
        """One value of the run's config.yaml (None without one)."""
        try:
            return yaml.safe_load(self.config.read_text())[section][key]
        except (OSError, KeyError, TypeError, yaml.YAMLError):
            return None

    def seed(self) -> int | None:
        """The run's training.seed, from its config.yaml (None without one)."""
        try:
            return int(self._setting("training", "seed"))
        except (TypeError, ValueError):
            return None

    def packed_path(self) -> str | None:
        """The `phf pack` folder the run trained on (data.packed_path), or None: it packed its own data/."""
        value = self._setting("data", "packed_path")
        return str(value) if value else None

    @property
    def input_fingerprint(self) -> Path:
        """What the packed blocks were made from (`phf.run_guard.input_fingerprint`)."""
        return self.data / "input.json"

    #: what `phf train` and `phf eval` write besides config.yaml and data/ (globs, in the folder)
    OUTPUTS = ("train_summary.json", "results.json", "redteam.json", "metrics.jsonl", "model.safetensors",
               "model-*.safetensors", "model.safetensors.index.json", "checkpoints", "samples", "config.json",
               "generation_config.json", "training_args.json", "training_args.bin", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja",
               "README.md")

    def outputs(self) -> list[Path]:
        """The outputs of an earlier run present in the folder (checkpoints/ only when it
        holds a checkpoint, TensorBoard's runs/ only when not empty)."""
        found = []
        for pattern in self.OUTPUTS:
            for p in sorted(self.dir.glob(pattern)):
                if p.is_dir() and not any(p.iterdir()):
                    continue
                found.append(p)
        return found

    def clear_outputs(self) -> list[Path]:
        """Delete the outputs of an earlier run (not config.yaml, not data/: the packed
        blocks are reused only when their inputs match); returns what was deleted."""
        import shutil

        removed = self.outputs()
        for p in removed:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        return removed


def write_text_atomic(path: str | Path, text: str, durable: bool = False) -> None:
    """Write `text` to `path` through a temporary file and a rename. `durable` also
    fsyncs it first, so that the file survives a power loss, not only a killed process."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: str | Path, obj, durable: bool = False) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2), durable=durable)


def read_json(path: str | Path, fix: str | None = None) -> dict | None:
    """The JSON object in `path`, or None when the file is absent. A damaged file (cut
    short, not JSON, not UTF-8) or a foreign one (not an object) is a DataError naming
    it and `fix`, what to do about it."""
    path = Path(path)
    if not path.exists():
        return None
    return json_object(path, fix or "delete it (phf writes it again) or restore it")


def json_object(path: Path, fix: str, what: str = "a phf file") -> dict:
    """The JSON object in the existing file `path`; a damaged or foreign one is a
    DataError naming it, `what` it should be, and `fix`."""
    try:
        obj = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise DataError(f"{path}: damaged, not valid JSON ({e}); {fix}", "damaged file") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: not {what} (a JSON {type(obj).__name__}, not an object); {fix}", "foreign file")
    return obj


def read_yaml(path: str | Path, fix: str) -> dict:
    """The YAML mapping in `path` (read safely: no Python tags); a missing, damaged or
    foreign file is a DataError naming it and `fix`."""
    path = Path(path)
    try:
        obj = yaml.safe_load(path.read_bytes())
    except FileNotFoundError:
        raise DataError(f"{path}: not found; {fix}", "missing file") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        reason = " ".join(str(e).split())
        raise DataError(f"{path}: damaged, not valid YAML ({reason}); {fix}", "damaged file") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: not a phf file (YAML {type(obj).__name__}, not a mapping); {fix}", "foreign file")
    return obj
