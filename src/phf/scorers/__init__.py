"""Scorers by name: `get_scorer("pep8")`, or a user's own as a dotted path
(`get_scorer("mypkg.scoring:MyScorer", **kwargs)`) without editing phf."""

from __future__ import annotations

import importlib
from typing import Callable

from phf.scorers.base import Scorer
from phf.scorers.segment import get_segmenter

_REGISTRY: dict[str, str] = {
    # name -> "module:Class"; imported lazily so a missing optional backend only
    # fails when that scorer is asked for.
    "pep8": "phf.scorers.pep8:PEP8Scorer",
    "multi": "phf.scorers.multi:MultiScorer",
    "pep8-ruff": "phf.scorers.pep8_ruff:RuffPEP8Scorer",
    "toxicity": "phf.scorers.toxicity:ToxicityScorer",
    "pii": "phf.scorers.pii:PIIScorer",
    "hf-classifier": "phf.scorers.hf_classifier:HFClassifierScorer",
}


def register_scorer(name: str, target: str) -> None:
    """Register `target` ("module:Class") under `name`."""
    _REGISTRY[name] = target


def available_scorers() -> list[str]:
    return sorted(_REGISTRY)


def _import(target: str):
    """Import "pkg.mod:attr" or "pkg.mod.attr"."""
    module_name, sep, attr = target.partition(":")
    if not sep:
        module_name, _, attr = target.rpartition(".")
    return getattr(importlib.import_module(module_name), attr)


def scorer_class(name: str):
    """What a registry name or dotted path names, imported (a Scorer subclass or a function)."""
    return _import(_REGISTRY.get(name, name))


def get_scorer(name: str, **kwargs) -> Scorer:
    """Build a scorer by registry name or dotted path ("pkg.mod:Class" or "pkg.mod.Class").

    A dotted path may also name a function `f(texts: list[str]) -> list[float]`; it is
    wrapped as a scorer over whole texts, segmenting by lines.
    """
    target = _REGISTRY.get(name)
    if target is None:
        if "." not in name and ":" not in name:
            raise ValueError(
                f"unknown scorer {name!r}; known: {', '.join(available_scorers())}, "
                "or give a dotted path such as 'mypkg.module:MyScorer'")
        target = name
    try:
        obj = _import(target)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot load scorer {name!r} from {target!r}: {e}") from e
    if isinstance(obj, type) and issubclass(obj, Scorer):
        return obj(**kwargs)
    if callable(obj):
        return FunctionScorer(obj, **kwargs)
    raise ValueError(f"scorer {name!r} ({target}) is neither a Scorer subclass nor a function")


def task_scorer(task) -> Scorer:
    """The scorer of a task config; a multi-attribute one combines per the task's rule."""
    extra = {"combine": task.combine, "combine_weights": task.combine_weights} if task.scorer == "multi" else {}
    return get_scorer(task.scorer, **{**task.scorer_args, **extra})


class FunctionScorer(Scorer):
    """Adapts a plain `f(texts) -> scores` function to the Scorer interface."""

    def __init__(self, fn: Callable, segmenter: str = "lines"):
        self.fn = fn
        self.name = getattr(fn, "__name__", "function")
        self._segment = get_segmenter(segmenter)

    def segment(self, text: str) -> list[str]:
        return self._segment(text)

    def score_segments(self, segments):
        return [float(x) for x in self.fn(list(segments))]


__all__ = ["Scorer", "get_scorer", "scorer_class", "task_scorer", "register_scorer", "available_scorers", "FunctionScorer"]
