from hypothesis import given, strategies as st

from phf.scorers.segment import get_segmenter, split_lines


@given(st.text())
def test_lines_join_to_the_text(text):
    lines = split_lines(text)
    assert "".join(lines) == text
    assert all(lines)  # no empty segments
    assert all(line.count("\n") <= 1 for line in lines)


def test_only_newline_ends_a_line():
    assert split_lines("a\x0cb\r\nc\n\nd") == ["a\x0cb\r\n", "c\n", "\n", "d"]


def test_unknown_segmenter_names_the_known_ones():
    import pytest

    with pytest.raises(ValueError, match="lines"):
        get_segmenter("paragraphs")
