"""PEP8 scorer on ruff: the pycodestyle rules (E/W codes) in compiled code.

Same scores as `phf.scorers.pep8` (violations per character, line by line; document
score = the plain mean of the line scores, or with `document_average="length_weighted"`
total violations / total characters), but the checks run in ruff, which implements
pycodestyle's rules in Rust, on a whole batch of documents per process call. It is a fast approximation of pycodestyle, not a copy: `bench/scoring.py`
measures how well the two agree (per document and per line). Use `pep8` when the
exact pycodestyle counts matter.

What differs from pycodestyle, by design of ruff:

* a few pycodestyle checks have no ruff rule (the E12x continuation-line checks,
  E131, W503/W504 - most are in pycodestyle's default ignore list anyway);
* checks that need a syntax tree (E401, E711, E712, E721, E731, E741, ...) are
  skipped on files that do not parse; each file that does not parse counts one
  violation, on the line of its first syntax error (pycodestyle reports E901/E902
  once per such file);
* E501 measures the display width and skips lines that end in a long URL;
* pycodestyle's E1/E2/E3 rules are "preview" rules in ruff, so `--preview` is on.

`continuation_lines=True` closes the largest gap: pycodestyle's own continuation-line
check (E12x/E131, which ruff lacks) runs on every document next to ruff. That is
exact for those codes but costs about a third of a full pycodestyle run. It is given
the lines pycodestyle would read from the file (universal newlines), as `pep8` is;
ruff itself reads "\r\n" files as files (no E275 on bare `return` lines).

Needs the `ruff` executable: `pip install 'phf[fast]'` (or any `ruff>=0.6` on PATH).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import tempfile
from typing import Sequence

import pycodestyle

from phf.scorers.segment import split_lines
from phf.scorers.base import Scorer, check_document_average
from phf.scorers.pep8 import PEP8Scorer, _CountingReport, lines_as_read, newline_line_numbers

#: pycodestyle's DEFAULT_IGNORE, in the codes ruff knows (E121, E123, E126 and
#: W503/W504 have no ruff rule; E24 is E241/E242)
DEFAULT_IGNORE = ("E226", "E241", "E242", "E704")
#: the code charged for a file that does not parse (pycodestyle's "could not check")
SYNTAX_ERROR = "E901"

def find_ruff(path: str | None = None) -> str:
    """The ruff executable: `path`, the `ruff` Python package's binary, or PATH."""
    if path:
        return path
    try:
        from ruff.__main__ import find_ruff_bin

        return os.fsdecode(find_ruff_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("ruff")
        if found:
            return found
    raise ValueError("the pep8-ruff scorer needs ruff: pip install 'phf[fast]' (or ruff>=0.6), "
                     "or use the scorer 'pep8' (pycodestyle)")


class RuffPEP8Scorer(Scorer):
    """pycodestyle's rules via ruff; same segments and score semantics as `PEP8Scorer`.

    `ignore`/`select` take pycodestyle codes or prefixes (as ruff selectors); by default
    all E and W rules except pycodestyle's default ignore list. `ruff` is the path of
    the executable (found automatically when None). `document_average`: "mean" (the
    paper's) or "length_weighted", for `document_score`.
    """

    name = "pep8-ruff"
    #: documents per `score_documents` call in `score_corpus`: each call starts ruff once
    chunk_size = 64

    def __init__(self, ignore: Sequence[str] | None = None, select: Sequence[str] | None = None,
                 max_line_length: int = 79, ruff: str | None = None, timeout: float = 600.0,
                 continuation_lines: bool = False, document_average: str = "mean"):
        self.document_average = check_document_average(document_average)
        self.ruff = find_ruff(ruff)
        self._continuation = _continuation_options(ignore, select, max_line_length) if continuation_lines else None
        self.timeout = timeout
        self._args = [
            self.ruff, "check", "--isolated", "--no-cache", "--preview", "--exit-zero", "--quiet",
            "--output-format", "json", "--line-length", str(max_line_length),
            "--select", ",".join(select if select is not None else ("E", "W")),
        ]
        ignore = DEFAULT_IGNORE if ignore is None else tuple(ignore)
        if ignore:
            self._args += ["--ignore", ",".join(ignore)]
        #: documents that did not parse (counted once each, see the module docstring)
        self.failures = 0

    def segment(self, text: str) -> list[str]:
        return split_lines(text)

    def violations_batch(self, texts: Sequence[str]) -> list[list[tuple[int, str]]]:
        """(1-based line number, code) for every violation of each text, in one ruff call.

        Line numbers count "\\n" only (as `split_lines` and pycodestyle do), also where
        a text holds lone "\\r" characters that ruff counts as line ends.
        """
        found: list[list[tuple[int, str]]] = [[] for _ in texts]
        todo = [i for i, t in enumerate(texts) if t]
        if not todo:
            return found
        with tempfile.TemporaryDirectory(prefix="phf-ruff-") as tmp:
            paths = {}
            for i in todo:
                path = os.path.join(tmp, f"{i}.py")
                with open(path, "w", encoding="utf-8", errors="replace", newline="") as f:
                    f.write(texts[i])
                paths[path] = i
            proc = subprocess.run([*self._args, *paths], capture_output=True, timeout=self.timeout)
            if proc.returncode != 0:
                raise RuntimeError(f"ruff failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-2000:]}")
            diagnostics = json.loads(proc.stdout or b"[]")
            # ruff reports absolute, resolved paths: resolve the folder once, not per diagnostic
            real = os.path.realpath(tmp)
            index = {**paths, **{os.path.join(real, os.path.basename(p)): i for p, i in paths.items()}}
        syntax_seen: set[int] = set()
        for d in diagnostics:
            i = index.get(d["filename"])
            if i is None:
                i = index.get(os.path.realpath(d["filename"]))
                if i is None:
                    continue
            code = d.get("code")
            if code is None or code == "E999":  # a syntax error (E999 before ruff 0.8): once per file
                if i in syntax_seen:
                    continue
                syntax_seen.add(i)
                code = SYNTAX_ERROR
            found[i].append((d["location"]["row"], code))
        self.failures += len(syntax_seen)
        for i, text in enumerate(texts):
            if found[i] and "\r" in text:
                found[i] = newline_line_numbers(text, found[i])
            if self._continuation is not None and text:
                found[i] += _continuation_violations(text, self._continuation)
        return found

    def violations(self, text: str) -> list[tuple[int, str]]:
        return self.violations_batch([text])[0]

    def score_documents(self, texts: Sequence[str]) -> list[tuple[list[str], list[float]]]:
        out = []
        for text, found in zip(texts, self.violations_batch(texts)):
            lines = split_lines(text)
            counts = [0] * len(lines)
            for line_number, _ in found:
                # W391/W292 and friends can point one past the last line
                counts[min(max(line_number, 1), len(lines)) - 1] += 1
            out.append((lines, [c / len(line) for c, line in zip(counts, lines)]))
        return out

    def score_document(self, text: str) -> tuple[list[str], list[float]]:
        return self.score_documents([text])[0]

    def score_segments(self, segments: Sequence[str]) -> list[float]:
        """Each segment as a file of its own (for whole-text scoring use `score_texts`)."""
        return self.score_texts(segments)

    def score_texts(self, texts: Sequence[str]) -> list[float]:
        """Violations per character of each whole text (a generated sample is a file)."""
        return [len(v) / len(t) if t else 0.0 for t, v in zip(texts, self.violations_batch(texts))]


def _continuation_options(ignore, select, max_line_length):
    """pycodestyle options that run only its continued_indentation check (E12x, E131)."""
    options = copy.copy(PEP8Scorer(ignore=ignore, select=select, max_line_length=max_line_length)._options)
    options.logical_checks = [c for c in options.logical_checks if c[0] == "continued_indentation"]
    options.physical_checks, options.ast_checks = [], []
    return options


def _continuation_violations(text: str, options) -> list[tuple[int, str]]:
    report = _CountingReport(options)
    try:  # the lines pycodestyle would read from the file, as in PEP8Scorer
        pycodestyle.Checker(lines=lines_as_read(text), options=options, report=report).check_all()
    except Exception:  # noqa: BLE001 - a file pycodestyle cannot tokenize: ruff already counted it
        return []
    return newline_line_numbers(text, [(n, c) for n, c in report.violations if c.startswith(("E12", "E13"))])
