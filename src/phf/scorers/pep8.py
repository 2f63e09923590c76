"""PEP8 scorer: pycodestyle violations per character, line by line.

pycodestyle runs over the whole file, so checks that need context (blank lines
between definitions, continuation-line indentation, E501 against the file) work; each
violation is charged to the line pycodestyle reports it on. A line's score is its
number of violations divided by its length in characters (the paper's "PEP8
violations per character"); the document's `avg_score` is total violations over total
characters, which is the length-weighted mean of the line scores (see
`Scorer.document_score`). A plain mean of line scores would let a violation on a
3-character line weigh 30 times one on a 90-character line.
"""

from __future__ import annotations

from typing import Sequence

import pycodestyle

from phf.scorers.segment import split_lines
from phf.scorers.base import Scorer


class _CountingReport(pycodestyle.BaseReport):
    """Collects (line number, code) instead of printing."""

    def __init__(self, options):
        super().__init__(options)
        self.violations: list[tuple[int, str]] = []

    def error(self, line_number, offset, text, check):
        code = text[:4]
        if self._ignore_code(code):
            return None
        # pycodestyle reports each code once per line unless `repeat`; we count all.
        self.violations.append((line_number, code))
        return code


class PEP8Scorer(Scorer):
    """pycodestyle with its defaults (max line length 79, default ignore list).

    `ignore`/`select`/`max_line_length` are passed to pycodestyle's StyleGuide.
    """

    name = "pep8"

    def __init__(self, ignore: Sequence[str] | None = None, select: Sequence[str] | None = None,
                 max_line_length: int = 79):
        kwargs = {"max_line_length": max_line_length, "quiet": True, "reporter": _CountingReport}
        if ignore is not None:
            kwargs["ignore"] = list(ignore)
        if select is not None:
            kwargs["select"] = list(select)
        self._options = pycodestyle.StyleGuide(**kwargs).options
        self._options.repeat = True
        #: documents pycodestyle could not check whole (see `violations`)
        self.failures = 0

    def segment(self, text: str) -> list[str]:
        return split_lines(text)

    def _check(self, lines: list[str]) -> list[tuple[int, str]]:
        report = _CountingReport(self._options)
        pycodestyle.Checker(lines=lines, options=self._options, report=report).check_all()
        return report.violations

    def violations(self, text: str) -> list[tuple[int, str]]:
        """(1-based line number, code) for every violation in `text`, as one file.

        pycodestyle can raise on code it cannot tokenize (generated samples often are
        such code). Then each line is checked as a file of its own, which loses the
        multi-line checks but keeps every line scored; `failures` counts these.
        """
        lines = split_lines(text)
        if not lines:
            return []
        try:
            return self._check(lines)
        except Exception:  # noqa: BLE001 - pycodestyle's internal errors vary
            self.failures += 1
        found = []
        for number, line in enumerate(lines, 1):
            try:
                found.extend((number, code) for _, code in self._check([line]))
            except Exception:  # noqa: BLE001
                found.append((number, "E902"))  # pycodestyle's code for "could not check"
        return found

    def score_document(self, text: str) -> tuple[list[str], list[float]]:
        lines = split_lines(text)
        counts = [0] * len(lines)
        for line_number, _ in self.violations(text):
            # W391/W292 and friends can point one past the last line
            counts[min(max(line_number, 1), len(lines)) - 1] += 1
        return lines, [c / len(line) for c, line in zip(counts, lines)]

    def score_segments(self, segments: Sequence[str]) -> list[float]:
        """Each segment as a file of its own (for whole-text scoring use `score_texts`)."""
        return self.score_texts(segments)

    def score_texts(self, texts: Sequence[str]) -> list[float]:
        """Violations per character of each whole text (a generated sample is a file)."""
        return [len(self.violations(t)) / len(t) if t else 0.0 for t in texts]
