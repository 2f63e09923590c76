"""Segmenters split a document into segments whose concatenation is the document."""

from __future__ import annotations

import re
from typing import Callable

from phf.scorers.sentences import split_sentences

Segmenter = Callable[[str], list[str]]


_LINE = re.compile(r"[^\n]*\n|[^\n]+")


def split_lines(text: str) -> list[str]:
    """Lines for code, each keeping its "\n" ("".join(lines) == text).

    Only "\n" ends a line (not the form feeds and other breaks that str.splitlines
    honours), so line numbers agree with pycodestyle's.
    """
    return _LINE.findall(text)


_SEGMENTERS: dict[str, Segmenter] = {"lines": split_lines, "sentences": split_sentences}


def register_segmenter(name: str, fn: Segmenter) -> None:
    _SEGMENTERS[name] = fn


def get_segmenter(name: str) -> Segmenter:
    try:
        return _SEGMENTERS[name]
    except KeyError:
        raise ValueError(f"unknown segmenter {name!r}; known: {', '.join(sorted(_SEGMENTERS))}") from None
