"""The PEP8 scorer on snippets with known violations, and on clean code."""

import pytest

from phf.scorers import get_scorer

CLEAN = '''import os


def add(a, b):
    """Add two numbers."""
    return a + b


class Point:
    def __init__(self, x, y):
        self.x = x
        self.y = y
'''


@pytest.fixture(scope="module")
def scorer():
    return get_scorer("pep8")


def test_clean_code_scores_zero(scorer):
    texts, scores = scorer.score_document(CLEAN)
    assert "".join(texts) == CLEAN
    assert scores == [0.0] * len(texts)
    assert scorer.document_score(texts, scores) == 0.0
    assert scorer.score_texts([CLEAN]) == [0.0]


def test_violations_are_charged_to_their_lines(scorer):
    # line 1: E401 (multiple imports); line 3: E225 (missing whitespace around operator)
    code = "import os, sys\n\nx=1\ny = 2\n"
    texts, scores = scorer.score_document(code)
    assert texts == ["import os, sys\n", "\n", "x=1\n", "y = 2\n"]
    assert scores[0] == pytest.approx(1 / len(texts[0]))
    assert scores[1] == 0.0
    assert scores[2] == pytest.approx(1 / 4)
    assert scores[3] == 0.0
    codes = [c for _, c in scorer.violations(code)]
    assert codes == ["E401", "E225"]


def test_multiline_checks_see_the_whole_file(scorer):
    # E302 (expected 2 blank lines) needs the lines before the def: a per-line check misses it
    code = "import os\ndef f():\n    return os\n"
    texts, scores = scorer.score_document(code)
    assert scores[1] > 0
    assert scorer.score_segments(["def f():\n"]) == [0.0]


def test_repeated_violations_on_one_line_all_count(scorer):
    code = "x = [1,2,3]\n"  # E231 three times? two commas -> two violations
    _, scores = scorer.score_document(code)
    assert scores[0] == pytest.approx(2 / len(code))


def test_document_score_is_the_mean_of_line_scores_or_length_weighted(scorer):
    code = "x=1\n" + "y = 2\n" * 9  # one violation (E225) on the 4-character first line
    texts, scores = scorer.score_document(code)
    # the paper's avg_score: the plain mean of the 10 line scores, (1/4 + 9 * 0) / 10
    assert scorer.document_score(texts, scores) == pytest.approx(0.025)
    weighted = get_scorer("pep8", document_average="length_weighted")
    assert weighted.document_score(texts, scores) == pytest.approx(1 / 58)  # violations / characters
    with pytest.raises(ValueError, match="document_average"):
        get_scorer("pep8", document_average="median")


def test_text_without_final_newline_keeps_exact_text(scorer):
    code = "a = 1\nb=2"
    texts, scores = scorer.score_document(code)
    assert "".join(texts) == code
    # b=2 has E225, and W292 (no newline at end of file) is on the same line
    assert scores[1] == pytest.approx(2 / 3)


def test_code_pycodestyle_cannot_tokenize_is_still_scored(scorer):
    garbage = 'def f(:\n    """unterminated\n  x=1\n'
    texts, scores = scorer.score_document(garbage)
    assert "".join(texts) == garbage
    assert len(scores) == 3 and all(s >= 0 for s in scores)
