"""The ruff PEP8 backend: same segments and score semantics as the pycodestyle scorer."""

import pytest

from test_pep8_scorer import CLEAN  # the same clean snippet for both backends

from phf.scorers import get_scorer

try:
    from phf.scorers.pep8_ruff import find_ruff

    find_ruff()
except ValueError:
    pytest.skip("ruff is not installed (pip install 'phf[fast]')", allow_module_level=True)



@pytest.fixture(scope="module")
def scorer():
    return get_scorer("pep8-ruff")


def test_clean_code_scores_zero(scorer):
    texts, scores = scorer.score_document(CLEAN)
    assert "".join(texts) == CLEAN
    assert scores == [0.0] * len(texts)
    assert scorer.score_texts([CLEAN, ""]) == [0.0, 0.0]


def test_violations_are_charged_to_their_lines_like_pycodestyle(scorer):
    code = "import os, sys\n\nx=1\ny = 2\n"
    texts, scores = scorer.score_document(code)
    assert texts == ["import os, sys\n", "\n", "x=1\n", "y = 2\n"]
    assert scores == get_scorer("pep8").score_document(code)[1]
    assert scores[0] == pytest.approx(1 / len(texts[0]))
    assert scores[2] == pytest.approx(1 / len(texts[2]))


def test_batch_keeps_documents_apart(scorer):
    docs = [CLEAN, "x=1\n", "", "def f( a ):\n    return a\n"]
    batched = scorer.score_documents(docs)
    assert [scorer.score_document(d) for d in docs] == batched
    assert sum(batched[1][1]) > 0 and sum(batched[3][1]) > 0
    assert batched[2] == ([], [])


def test_unparsable_code_is_scored_not_raised(scorer):
    code = "def f(:\n    return 1\n"
    texts, scores = scorer.score_document(code)
    assert "".join(texts) == code and sum(scores) > 0


def test_lone_carriage_returns_keep_newline_line_numbers(scorer):
    # ruff counts a lone "\r" as a line end; the scorer's lines end at "\n" only
    code = "x = 1\ry = 2\nz=3\n"
    texts, scores = scorer.score_document(code)
    assert texts == ["x = 1\ry = 2\n", "z=3\n"]
    assert scores[1] > 0


def test_continuation_lines_option_adds_pycodestyle_e12x():
    code = "foo = dict(a=1,\n    b=2)\n"
    assert sum(get_scorer("pep8-ruff").score_document(code)[1]) == 0
    assert get_scorer("pep8-ruff", continuation_lines=True).score_document(code)[1] == \
        get_scorer("pep8").score_document(code)[1]
