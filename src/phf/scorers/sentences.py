"""A sentence segmenter for English prose that never loses a character.

`split_sentences(text)` returns sentences whose concatenation is exactly `text`: every
boundary sits *after* the whitespace that follows a sentence, so trailing spaces and
newlines (and the indentation of the next line) stay with the sentence before them, and
leading whitespace of the document stays with the first sentence. So no segment is
empty, and every segment but the first starts with a non-space character.

It is a few regular expressions and rules, not a model (the paper used spaCy's rule-based
"sentencizer", which also splits on punctuation). A boundary is:

* sentence punctuation (``.``, ``!``, ``?``, ``…``, runs such as ``?!`` or ``...``),
  optionally followed by closing quotes or brackets, then whitespace, unless
  - the next sentence would start with a lowercase letter ("e.g. the", "Wait... what"),
  - the word ending in "." is a known abbreviation (Mr., Dr., e.g., Fig.), an initial
    ("J. R. R. Tolkien"), or a list number at the start of a line ("1. Intro");
    a few abbreviations that often end a sentence (etc., Inc., a.m., U.S.) split
    only before a capitalised word;
* a paragraph break (a blank line), always;
* a newline before a list item ("* ", "- ", "2) "), as in changelogs and READMEs.

Decimals ("3.14") and addresses ("john@example.com") never split because no whitespace
follows their dots.
"""

from __future__ import annotations

import re

# Abbreviations (lowercase, without the final ".") after which a "." never ends a sentence:
# titles before names and abbreviations that are followed by more of the sentence.
_NEVER_END = frozenset("""
    mr mrs ms mx dr prof sr jr st mt rev hon gov sen rep pres gen col maj capt cpt lt sgt
    cmdr adm fr messrs mme mlle
    e.g i.e cf vs viz al approx ca fig figs eq eqs no nos vol vols pp ch sec art dept
    est ed eds op esp incl
    jan feb mar apr jun jul aug sep sept oct nov dec
""".split())

# Abbreviations that often end a sentence: split only when a capitalised word follows.
_MAY_END = frozenset("etc inc ltd co corp bros llc plc a.m p.m u.s u.k u.n e.u d.c ph.d".split())

_CLOSERS = "\"'”’»)]}"

# One alternative per kind of boundary; the boundary is at the end of the match.
_CANDIDATE = re.compile(
    # possessive quantifiers and the lookbehind keep this linear on long runs of "."
    r"(?<![.!?…])(?P<term>[.!?…]++)[" + re.escape(_CLOSERS) + r"]*+(?P<ws>\s++)"  # end punctuation
    r"|\n[^\S\n]*+\n\s*+"                                                      # paragraph break
    r"|\n[^\S\n]*+(?=(?:[-*•+]|\d{1,3}[.)])[^\S\n])"                          # new list item
)
_PARAGRAPH = re.compile(r"\n[^\S\n]*\n")
_DOTTED_ACRONYM = re.compile(r"(?:[a-z]\.)+[a-z]")  # u.s, e.g, ph.d (lowercased, no final dot)
_OPENERS = "\"'“‘«([{"


def _word_before(text: str, end: int, limit: int = 24) -> tuple[str, int]:
    """The run of non-space characters ending at `end` (at most `limit` long) and its start."""
    start = end
    while start > 0 and end - start < limit and not text[start - 1].isspace():
        start -= 1
    return text[start:end], start


def _at_line_start(text: str, pos: int) -> bool:
    """True when only spaces or tabs stand between the previous newline (or the start) and `pos`."""
    while pos > 0 and text[pos - 1] in " \t":
        pos -= 1
    return pos == 0 or text[pos - 1] == "\n"


def _is_boundary(text: str, m: re.Match) -> bool:
    nxt = text[m.end()] if m.end() < len(text) else ""
    if not nxt:
        return False  # never leave an empty last segment
    if m.group("term") is None:
        return True  # paragraph break or list item
    if _PARAGRAPH.search(m.group("ws")):
        return True
    if nxt.islower():
        return False
    if m.group("term") != ".":
        return True
    word, start = _word_before(text, m.start("term"))
    word = word.lstrip(_OPENERS)
    key = word.lower()
    if not word:
        return True
    if key in _NEVER_END:
        return False
    if len(word) == 1 and word.isalpha() and word.isupper():
        return False  # an initial: "J. Smith"
    if word.isdigit() and len(word) <= 3 and _at_line_start(text, start):
        return False  # an enumerator at the start of a line: "1. Introduction"
    if key in _MAY_END or _DOTTED_ACRONYM.fullmatch(key):
        return nxt.isupper()
    return True


def split_sentences(text: str) -> list[str]:
    """Split English prose into sentences; `"".join(split_sentences(t)) == t` for any `t`."""
    out: list[str] = []
    prev = 0
    leading_ws = len(text) - len(text.lstrip())  # a document's leading blank lines stay with sentence 1
    for m in _CANDIDATE.finditer(text):
        if m.start() >= leading_ws and _is_boundary(text, m):
            out.append(text[prev:m.end()])
            prev = m.end()
    if prev < len(text):
        out.append(text[prev:])
    return out


__all__ = ["split_sentences"]
