"""PEP8 scorer: pycodestyle violations per character, line by line.

pycodestyle runs over the whole file, so checks that need context (blank lines
between definitions, continuation-line indentation, E501 against the file) work; each
violation is charged to the line pycodestyle reports it on. A line's score is its
number of violations divided by its length in characters, newline included (the
paper's "PEP8 violations per character").

The document's `avg_score` is, by default, the plain mean of its line scores: that is
how the paper's scored codeparrot dataset was built, and the scale of its filtering
threshold (0.002361). `document_average="length_weighted"` gives total violations /
total characters instead (see `phf.scorers.base.document_average`); it needs its own
threshold.

pycodestyle sees the text as it would read it from a file: with universal newlines,
so "\r\n" and a lone "\r" end a line and reach the checks as "\n" (given "\r\n"
lines directly, pycodestyle reports E275 on every bare `return`/`continue`/`raise`,
which it never does on the file). Segments keep the original line endings and split
at "\n" only, so they join back to the text; a violation on a line that a lone "\r"
splits is charged to the "\n"-line holding it.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from typing import Sequence

import pycodestyle

from phf.scorers.segment import split_lines
from phf.scorers.base import Scorer, check_document_average


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


_UNIVERSAL_NEWLINE = re.compile(r"\r\n|\r|\n")


def lines_as_read(text: str) -> list[str]:
    """The lines pycodestyle reads from a file holding `text`: universal newlines, so
    "\r\n", "\r" and "\n" each end a line, and each ending is read as "\n"."""
    return split_lines(text.replace("\r\n", "\n").replace("\r", "\n")) if "\r" in text else split_lines(text)


def newline_line_numbers(text: str, found: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """(line number, code) with universal-newline line numbers ("\r\n", "\r" and "\n" end
    a line: pycodestyle reading a file, ruff) -> the numbers of `split_lines(text)`,
    where only "\n" ends a line. The same numbers unless `text` has a lone "\r"."""
    if "\r" not in text.replace("\r\n", ""):
        return found
    starts = [0] + [m.end() for m in _UNIVERSAL_NEWLINE.finditer(text)]
    nl_starts = [0] + [m.end() for m in re.finditer("\n", text)]
    return [(bisect_right(nl_starts, starts[min(max(row, 1), len(starts)) - 1]), code) for row, code in found]


class PEP8Scorer(Scorer):
    """pycodestyle with its defaults (max line length 79, default ignore list).

    `ignore`/`select`/`max_line_length` are passed to pycodestyle's StyleGuide.
    `document_average`: "mean" (the paper's) or "length_weighted", for `document_score`.
    """

    name = "pep8"

    def __init__(self, ignore: Sequence[str] | None = None, select: Sequence[str] | None = None,
                 max_line_length: int = 79, document_average: str = "mean"):
        self.document_average = check_document_average(document_average)
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

        Line numbers are those of `split_lines(text)` ("\n" ends a line); pycodestyle
        sees the lines it would read from a file (see `lines_as_read`).
        pycodestyle can raise on code it cannot tokenize (generated samples often are
        such code). Then each line is checked as a file of its own, which loses the
        multi-line checks but keeps every line scored; `failures` counts these.
        """
        return newline_line_numbers(text, self._violations(lines_as_read(text)))

    def _violations(self, lines: list[str]) -> list[tuple[int, str]]:
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
