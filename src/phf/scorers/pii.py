"""Personally identifiable information: PII items found per character, per sentence.

As in the paper, items are found with scrubadub: its default detectors (emails, URLs,
phone numbers, credit-card and social-security numbers, Twitter handles, credentials),
plus Skype names and dates of birth, plus street addresses found with pyap (the
paper's "address detector without libpostal": libpostal needs a large model download),
plus person and organisation names from a spaCy NER pipeline *when one is installed*
(the paper used en_core_web_sm; there is none on PyPI, so by default names are found
only if such a package or directory is present; see `missing`).

Overlapping finds count once (scrubadub's own merging rule). A detector that throws on
odd input is skipped for that text and counted in `failures`; it is never fatal.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import warnings
from collections import Counter
from pathlib import Path
from typing import Sequence

from phf.scorers.segment import get_segmenter
from phf.scorers.base import Scorer, check_document_average

logger = logging.getLogger(__name__)

#: scrubadub detectors used by default: its autoloaded set plus skype and date_of_birth
DEFAULT_DETECTORS = ("credential", "credit_card", "email", "phone", "twitter", "url",
                     "social_security_number", "skype", "date_of_birth")
#: spaCy entity labels counted as PII (scrubadub_spacy's default, which the paper used)
DEFAULT_ENTITIES = ("PERSON", "PER", "ORG")

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_EMAIL = re.compile(r"\b[a-z0-9!#$%&'*+/=?^_`{|}~-](?:[a-z0-9!#$%&'*+/=?^_`{|}~.-]{0,63})"
                    rf"@{_LABEL}(?:\.{_LABEL})+\b", re.IGNORECASE)


class PIIScorer(Scorer):
    """PII items per character of each sentence (0 when none is found).

    Args:
        detectors: scrubadub detector names (see `DEFAULT_DETECTORS`).
        addresses: also find street addresses with pyap (no libpostal).
        address_countries: the countries whose address formats pyap looks for ("US",
            "GB", "CA"). The paper used US only; pyap's GB pattern also takes words
            such as "Fix ppc64el" for a street and postcode.
        names: True (require a spaCy NER pipeline), False, or "auto" (use one if installed).
        spacy_model: an installed spaCy pipeline package name or a pipeline directory.
        entities: spaCy entity labels that count as PII.
        locale: scrubadub locale (phone-number region, date language), e.g. "en_US".
        email_at_word: use scrubadub's own email pattern, which also takes "name at
            example.com" for an address. It also takes any "met at noon." that ends a
            sentence (the domain's dot may be the full stop), so every "... at home."
            counts as PII; the paper's data had that. Off by default: an email then
            needs an "@" and a dotted domain.
        document_average: "mean" (default): a document's score is the plain mean of its
            sentence scores, as the paper's scored Pile (tomekkorbak/pii-pile-*) computed
            avg_score, and so the scale of its thresholds; "length_weighted" (alias
            "chars"): total items / total characters (see `phf.scorers.base.document_average`).
    """

    name = "pii"

    def __init__(self, detectors: Sequence[str] = DEFAULT_DETECTORS, addresses: bool = True,
                 address_countries: Sequence[str] = ("US",), names: bool | str = "auto",
                 spacy_model: str = "en_core_web_sm", entities: Sequence[str] = DEFAULT_ENTITIES,
                 locale: str = "en_US", email_at_word: bool = False, document_average: str = "mean",
                 segmenter: str = "sentences"):
        document_average = check_document_average(
            "length_weighted" if document_average == "chars" else document_average)
        if names not in (True, False, "auto"):
            raise ValueError(f"names must be True, False or 'auto', not {names!r}")
        try:
            import scrubadub
        except ImportError as e:
            raise ImportError("the PII scorer needs scrubadub: pip install scrubadub") from e
        catalogue = scrubadub.detectors.catalogue.detector_catalogue.get_all()
        unknown = [d for d in detectors if d not in catalogue]
        if unknown:
            raise ValueError(f"unknown scrubadub detectors {unknown}; known: {', '.join(sorted(catalogue))}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "detector does not support locale" noise
            self.detectors = {d: catalogue[d](locale=locale) for d in detectors}
        if "email" in self.detectors and not email_at_word:
            self.detectors["email"].regex = _EMAIL
        if addresses:
            self.detectors["address"] = _AddressDetector(address_countries)
        #: optional parts that are off, and why
        self.missing: dict[str, str] = {}
        self._names = None
        if names:
            try:
                self._names = _SpacyNames(spacy_model, entities)
            except (ImportError, OSError) as e:
                if names is True:
                    raise
                self.missing["names"] = str(e)
        #: detector name -> number of texts on which it raised (and was skipped)
        self.failures: Counter = Counter()
        #: detector name -> the last exception it raised, for debugging
        self.last_errors: dict[str, str] = {}
        self.document_average = document_average
        self._segment = get_segmenter(segmenter)

    # -- finding -----------------------------------------------------------------------

    def find_pii(self, text: str) -> list[tuple[str, int, int]]:
        """The PII spans in `text` as (kind, begin, end), overlapping finds merged into one
        (its kind is "+"-joined, e.g. "email+url")."""
        return self._find_many([text])[0]

    def count_pii(self, text: str) -> int:
        return len(self.find_pii(text))

    def _find_many(self, texts: Sequence[str]) -> list[list[tuple[str, int, int]]]:
        names = self._names.find(texts, self._fail) if self._names is not None else None
        out = []
        for i, text in enumerate(texts):
            spans = list(names[i]) if names is not None else []
            if text.strip():
                lowered = text.lower()
                for kind, detector in self.detectors.items():
                    if not _may_find(detector, lowered):
                        continue
                    try:
                        spans.extend((kind, f.beg, f.end) for f in detector.iter_filth(text)
                                     if f.is_valid())
                    except Exception as e:  # noqa: BLE001 -- a detector bug must not stop scoring
                        self._fail(kind, e)
            out.append(_merge(spans))
        return out

    def _fail(self, kind: str, error: Exception) -> None:
        if not self.failures[kind]:
            logger.warning("PII detector %r failed (skipped for that text): %r", kind, error)
        self.failures[kind] += 1
        self.last_errors[kind] = repr(error)

    # -- Scorer interface --------------------------------------------------------------

    def segment(self, text: str) -> list[str]:
        return self._segment(text)

    def score_segments(self, segments: Sequence[str]) -> list[float]:
        found = self._find_many(list(segments))
        return [len(f) / len(s) if s else 0.0 for s, f in zip(segments, found)]


def _may_find(detector, lowered_text: str) -> bool:
    """False when `detector` cannot find anything in the text, to skip slow detectors.

    Exact, not a heuristic: scrubadub's date-of-birth detector (dateparser, the slowest
    of all) only reports a date with one of its context words ("born", "birth", ...) near it.
    """
    if getattr(detector, "name", "") == "date_of_birth" and detector.require_context:
        return any(word in lowered_text for word in detector.context_words)
    return True


def _merge(spans: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """Merge overlapping or touching spans, as scrubadub's Scrubber does."""
    merged: list[tuple[str, int, int]] = []
    for kind, beg, end in sorted(spans, key=lambda s: (s[1], -s[2])):
        if merged and beg <= merged[-1][2]:
            k, b, e = merged[-1]
            kinds = k.split("+")
            merged[-1] = ("+".join(kinds + [kind] if kind not in kinds else kinds), b, max(e, end))
        else:
            merged.append((kind, beg, end))
    return merged


class _Found:
    """The little of scrubadub's Filth that `_find_many` reads."""

    __slots__ = ("beg", "end")

    def __init__(self, beg: int, end: int):
        self.beg, self.end = beg, end

    def is_valid(self) -> bool:
        return self.end > self.beg


class _AddressDetector:
    """Street addresses via pyap, with no libpostal (as in the paper's code).

    pyap reports addresses in whitespace-normalised text, so each one is located again
    in the original text with a pattern that allows any whitespace and commas between
    its words.
    """

    def __init__(self, countries: Sequence[str]):
        try:
            import pyap
        except ImportError as e:
            raise ImportError("address detection needs pyap: pip install pyap "
                              "(or pass addresses=False)") from e
        self._parse = pyap.parse
        self.countries = [c.upper() for c in countries]

    def iter_filth(self, text: str):
        for country in self.countries:
            for address in self._parse(text, country=country):
                words = re.split(r"[\s,]+", address.full_address.strip())
                pattern = r"[\s,]+".join(re.escape(w) for w in words if w)
                matches = list(re.finditer(pattern, text))
                for m in matches:
                    yield _Found(m.start(), m.end())
                if not matches:  # pyap changed a character: use its approximate offsets
                    yield _Found(min(address.match_start, len(text) - 1),
                                 min(address.match_end, len(text)))


class _SpacyNames:
    """Person/organisation names from a spaCy pipeline that sets `doc.ents`."""

    def __init__(self, model: str, entities: Sequence[str]):
        # look for the pipeline before importing spaCy, which takes seconds
        if not (Path(model).is_dir() or importlib.util.find_spec(model) is not None):
            raise OSError(
                f"no spaCy pipeline {model!r} is installed, so names are not counted as PII. "
                f"Install one (python -m spacy download {model} needs network access; or pip "
                "install a wheel of it) or pass spacy_model= a pipeline directory.")
        try:
            import spacy
        except ImportError as e:
            raise ImportError("name detection needs spaCy: pip install spacy") from e
        self.nlp = spacy.load(model)
        if not {"ner", "entity_ruler"} & set(self.nlp.pipe_names):
            raise OSError(f"the spaCy pipeline {model!r} finds no entities (no 'ner' component)")
        self.entities = {e.upper() for e in entities}

    def find(self, texts: Sequence[str], on_error) -> list[list[tuple[str, int, int]]]:
        try:
            docs = list(self.nlp.pipe(texts))
        except Exception:  # noqa: BLE001 -- retry one by one so only the bad text is skipped
            docs = []
            for text in texts:
                try:
                    docs.append(self.nlp(text))
                except Exception as e:  # noqa: BLE001
                    on_error("names", e)
                    docs.append(None)
        return [[("name", ent.start_char, ent.end_char) for ent in doc.ents
                 if ent.label_ in self.entities] if doc is not None else [] for doc in docs]


__all__ = ["PIIScorer", "DEFAULT_DETECTORS", "DEFAULT_ENTITIES"]
