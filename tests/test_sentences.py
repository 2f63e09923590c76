"""The prose sentence segmenter: exact round trip, no empty segments, and known splits."""

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phf.scorers.segment import get_segmenter
from phf.scorers.sentences import split_sentences

# Text that is dense in the characters the rules look at.
_tricky = st.text(
    alphabet=st.sampled_from(list("aB .!?…\"')(\n\t\r*-12eg.Mr\u00a0\u2028")) | st.characters(),
    max_size=300,
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=300), _tricky))
def test_join_is_identity_and_no_empty_segments(text):
    segments = split_sentences(text)
    assert "".join(segments) == text
    assert all(segments), "empty segment"
    # every boundary sits after whitespace: segments after the first start with a
    # non-space character, and all but the last end with whitespace
    for seg in segments[1:]:
        assert not seg[0].isspace()
    for seg in segments[:-1]:
        assert seg[-1].isspace()


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=200), _tricky))
def test_a_sentence_resplit_is_itself(text):
    for seg in split_sentences(text):
        assert split_sentences(seg) == [seg]


_WORDS = st.lists(st.sampled_from(["the", "cat", "sat", "on", "mat", "and", "dog", "ran"]),
                  min_size=1, max_size=8)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_WORDS, st.sampled_from([".", "!", "?", "...", ".\"", "?)"]),
                          st.sampled_from([" ", "  ", "\n", " \n\n"])), min_size=1, max_size=10))
def test_generated_sentences_are_found(parts):
    sentences = [" ".join(words).capitalize() + end + ws for words, end, ws in parts]
    assert split_sentences("".join(sentences)) == sentences


@pytest.mark.parametrize("text, expected", [
    ("Hello world. How are you? Fine!", ["Hello world. ", "How are you? ", "Fine!"]),
    ("Mr. Smith met Dr. Jones at St. Paul's. They talked.",
     ["Mr. Smith met Dr. Jones at St. Paul's. ", "They talked."]),
    ("It costs 3.50 dollars. Pi is 3.14159.", ["It costs 3.50 dollars. ", "Pi is 3.14159."]),
    ("Use a tool, e.g. a hammer, i.e. not a saw. Done.",
     ["Use a tool, e.g. a hammer, i.e. not a saw. ", "Done."]),
    ("He lives in the U.S. He likes it.", ["He lives in the U.S. ", "He likes it."]),
    ("The U.S. economy grew.", ["The U.S. economy grew."]),
    ("Wait... what? Well... I see. Fine.", ["Wait... what? ", "Well... ", "I see. ", "Fine."]),
    ('She said "Stop." Then she left.', ['She said "Stop." ', "Then she left."]),
    ("(It was late.) We went home.", ["(It was late.) ", "We went home."]),
    ("J. R. R. Tolkien wrote it. Really.", ["J. R. R. Tolkien wrote it. ", "Really."]),
    ("Apples, pears, etc. are fruit. Bread etc. Then more.",
     ["Apples, pears, etc. are fruit. ", "Bread etc. ", "Then more."]),
    ("See Fig. 3 and No. 5. Next.", ["See Fig. 3 and No. 5. ", "Next."]),
    ("Mail john.smith@example.com today. Thanks.",
     ["Mail john.smith@example.com today. ", "Thanks."]),
    ("First paragraph without a stop\n\nSecond one\n",
     ["First paragraph without a stop\n\n", "Second one\n"]),
    ("A line that\nwraps. Next.", ["A line that\nwraps. ", "Next."]),
    ("  * Fix bug\n  * Add feature\n", ["  * Fix bug\n  ", "* Add feature\n"]),
    ("1. Introduction\n2. Methods", ["1. Introduction\n", "2. Methods"]),
    ("End.  \n", ["End.  \n"]),
    ("\n\n  Leading space. Next.", ["\n\n  Leading space. ", "Next."]),
    ("Really?! Yes.", ["Really?! ", "Yes."]),
    ("", []),
    ("   ", ["   "]),
])
def test_known_splits(text, expected):
    assert split_sentences(text) == expected


def test_registered_as_segmenter():
    assert get_segmenter("sentences") is split_sentences


def test_fast_on_a_large_document():
    text = ("Mr. Smith went to Washington, D.C. on Monday. He paid $3.50, e.g. for coffee... "
            "Then he left!\n\n") * 20_000  # ~2 MB
    t0 = time.perf_counter()
    segments = split_sentences(text)
    elapsed = time.perf_counter() - t0
    assert "".join(segments) == text
    assert elapsed < 5.0, f"{elapsed:.1f}s for {len(text)} characters"


def test_no_quadratic_blowup_on_pathological_input():
    # long runs with no whitespace, many dots, and no boundaries
    for text in ["a." * 200_000, "." * 400_000, "x" * 400_000 + ". Y", "1. " * 100_000]:
        t0 = time.perf_counter()
        assert "".join(split_sentences(text)) == text
        assert time.perf_counter() - t0 < 5.0
