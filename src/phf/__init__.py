"""phf: pretraining language models with human feedback (Korbak et al., 2023).

The Python API (`docs/API.md`), the command line's commands as functions:

    phf.config(settings, overrides)   a validated run config       (phf config)
    phf.score(settings, overrides)    score a corpus               (phf score)
    phf.train(settings, overrides)    train one run                (phf train)
    phf.evaluate(run_dir, overrides)  evaluate a trained run       (phf eval)
    phf.report(run_dirs, out)         compare runs                 (phf report)
    phf.sweep(task, ...)              every objective, seeds       (phf sweep)
    phf.generate(model, tokenizer, prompts, ...)   aligned samples from a model

and the pieces for one's own training loop: the losses (`phf.MLE`, `phf.Unlikelihood`,
`phf.AWR`, `phf.build_objective("rwr")`, the `phf.Objective` base class), packing
scored records into blocks with per-token scores (`phf.read_scored`, `phf.pack`,
`phf.PackSpec`, `phf.PackedDataset`) and the control tokens (`phf.add_control_tokens`).

Everything is imported on first use (a module `__getattr__`), so `import phf` loads
neither torch nor transformers, and `phf score` / `phf config` start in a moment.
"""

from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

#: public name -> the module that defines it (imported when the name is first used)
_LAZY = {
    "score": "phf.api", "evaluate": "phf.api",
    "Config": "phf.config", "load_config": "phf.config",
    "generate": "phf.evaluation.generate",
    "Objective": "phf.objectives", "ObjectiveOutput": "phf.objectives", "MLE": "phf.objectives",
    "Unlikelihood": "phf.objectives", "AWR": "phf.objectives", "build_objective": "phf.objectives",
    "objective_from_config": "phf.objectives",
    "ScoredRecord": "phf.records", "read_scored": "phf.records",
    "pack": "phf.data.packing", "PackSpec": "phf.data.packing", "PackedDataset": "phf.data.packing",
    "add_control_tokens": "phf.tokenizer", "ALIGNED": "phf.tokenizer", "MISALIGNED": "phf.tokenizer",
}

#: API functions that share their name with a module of the package (phf/train.py, ...):
#: `phf.train` is that module, made callable, so `phf.train(cfg)` runs `phf.api.train`
#: while `import phf.train` and `phf.train.pack_spec` keep meaning the module
_CALLABLE_MODULES = ("config", "train", "report", "sweep")

__all__ = sorted([*_LAZY, *_CALLABLE_MODULES])


class _CallableModule(types.ModuleType):
    """A module of phf that is also the API function of the same name."""

    def __call__(self, *args, **kwargs):
        from phf import api

        return getattr(api, self.__name__.rpartition(".")[2])(*args, **kwargs)


class _Package(types.ModuleType):
    """The `phf` package: its submodules config, train, report and sweep become callable
    when the import system sets them as attributes of the package."""

    def __setattr__(self, name, value):
        if name in _CALLABLE_MODULES and type(value) is types.ModuleType:
            value.__class__ = _CallableModule
        super().__setattr__(name, value)


def __getattr__(name: str):
    if name in _CALLABLE_MODULES:
        return importlib.import_module(f"phf.{name}")  # the import sets it on the package, callable
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # looked up once
        return value
    raise AttributeError(f"module 'phf' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


sys.modules[__name__].__class__ = _Package
