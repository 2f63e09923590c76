"""The Python API (`phf/__init__.py`, `phf/api.py`): lazy imports, the callable modules,
and every example of docs/API.md, executed in order."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import phf
from phf.errors import ConfigError

API_MD = Path(__file__).resolve().parent.parent / "docs" / "API.md"


def test_import_phf_and_a_config_load_neither_torch_nor_transformers():
    code = ("import sys, phf; cfg = phf.config(['tasks/pep8', 'objectives/conditional', 'models/tiny']); "
            "phf.score, phf.evaluate; print(cfg.objective.name, 'torch' in sys.modules, "
            "'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["conditional", "False", "False"]


def test_the_modules_named_like_api_functions_stay_modules_and_are_callable():
    import phf.train

    assert callable(phf.train) and callable(phf.report) and callable(phf.sweep) and callable(phf.config)
    assert phf.train.pack_spec.__module__ == "phf.train"  # still the module
    assert phf.config.describe.__module__ == "phf.config"
    from phf.train import train

    assert train is phf.train.train


def test_config_overrides_as_mapping_or_strings_agree_and_bad_keys_are_config_errors():
    files = ["tasks/pep8", "objectives/unlikelihood", "models/tiny"]
    a = phf.config(files, {"objective.alpha": 0.5, "training.seed": 3})
    b = phf.config([*files, "objective.alpha=0.5"], ["training.seed=3"])
    c = phf.config(a)  # a Config passes through
    assert a == b == c and a.objective.alpha == 0.5 and a.training.seed == 3
    assert phf.config(a, {"training.seed": 4}).training.seed == 4
    with pytest.raises(ConfigError, match="training.learning_rte"):
        phf.config(files, {"training.learning_rte": 1e-3})
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        phf.nothing  # noqa: B018


def test_objective_classes_are_exported():
    from phf import objectives

    assert phf.MLE is objectives.MLE and phf.AWR is objectives.AWR and phf.Unlikelihood is objectives.Unlikelihood
    assert isinstance(phf.build_objective("rwr"), phf.AWR)
    assert set(phf.__all__) >= {"score", "train", "evaluate", "report", "sweep", "generate", "MLE"}


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_api_md_examples_run(tmp_path, monkeypatch):
    blocks = python_blocks(API_MD.read_text())
    assert len(blocks) >= 6
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "api_md"}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"docs/API.md block {i + 1}", "exec"), namespace)
        except Exception as e:
            raise AssertionError(f"docs/API.md, python block {i + 1} failed: {e!r}\n{block}") from e
    assert namespace["trainer"].state.global_step == 4  # the own-Trainer example trained
    assert phf.generate.__module__ == "phf.evaluation.generate"
