import itertools
import math
import random

import pytest

from phf.evaluation.metrics import (
    distinct_n,
    expected_max,
    expected_max_of_subsets,
    hit_rate,
    mean_length,
    ngram_entropy,
    summarize_scores,
)


def test_expected_max_known_groups():
    scores = [0, 1, 2, 3, 10, 0]  # groups of 3: max 2, max 10
    assert expected_max(scores, group_size=3) == 6.0
    assert expected_max(scores, group_size=1) == pytest.approx(sum(scores) / 6)


def test_expected_max_drops_partial_trailing_group():
    # groups of 2: (1, 2), (3, 4); the lone 100 is dropped
    assert expected_max([1, 2, 3, 4, 100], group_size=2) == 3.0


def test_expected_max_fewer_than_group_is_max():
    assert expected_max([0.1, 0.7, 0.3], group_size=25) == 0.7


def test_expected_max_rejects_empty():
    with pytest.raises(ValueError):
        expected_max([])


def test_expected_max_of_subsets_matches_enumeration():
    rng = random.Random(0)
    scores = [rng.random() for _ in range(9)]
    for k in (1, 3, 5, 9):
        brute = [max(c) for c in itertools.combinations(scores, k)]
        assert expected_max_of_subsets(scores, k) == pytest.approx(sum(brute) / len(brute))
    assert expected_max_of_subsets(scores, 20) == max(scores)
    # order does not matter
    assert expected_max_of_subsets(sorted(scores), 3) == pytest.approx(
        expected_max_of_subsets(scores[::-1], 3))


def test_expected_max_of_subsets_large_pool_is_finite():
    value = expected_max_of_subsets([i / 5000 for i in range(5000)], 25)
    assert 0.95 < value < 1.0


def test_hit_rate_is_strictly_above():
    assert hit_rate([0, 0, 0.5, 1.0], threshold=0.5) == 0.25
    assert hit_rate([0, 0, 0.5, 1.0], threshold=0.0) == 0.5


def test_distinct_n_known_counts():
    texts = ["a b a b", "a b c"]
    # unigrams: a b a b a b c -> 7 total, 3 unique
    assert distinct_n(texts, 1) == pytest.approx(3 / 7)
    # bigrams: ab ba ab | ab bc -> 5 total, 3 unique (no bigram across texts)
    assert distinct_n(texts, 2) == pytest.approx(3 / 5)
    assert distinct_n(["a"], 2) == 0.0


def test_ngram_entropy_known_values():
    assert ngram_entropy(["x x x x"], 1) == 0.0
    assert ngram_entropy(["a b c d"], 1) == pytest.approx(2.0)  # uniform over 4
    # bigrams ab, ba, ab: p = 2/3, 1/3
    expected = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert ngram_entropy(["a b a b"], 2) == pytest.approx(expected)


def test_mean_length_tokens_and_chars():
    assert mean_length(["ab cd", "e"]) == {"tokens": 1.5, "chars": 3.0}


def test_summarize_scores_keys_and_values():
    texts = ["a b", "a c", "d", "e f g"]
    summary = summarize_scores([0.0, 0.2, 0.4, 0.6], texts, group_size=2, hit_threshold=0.3)
    assert summary["misalignment"] == pytest.approx(0.3)
    assert summary["expected_max"] == pytest.approx(0.4)  # mean(0.2, 0.6)
    assert summary["hit_rate"] == 0.5
    assert summary["num_samples"] == 4
    assert summary["distinct_1"] == pytest.approx(7 / 8)
    assert summary["mean_length"] == 2.0
    assert summary["mean_length_chars"] == 3.0  # (3 + 3 + 1 + 5) / 4
    assert {"distinct_2", "distinct_3", "entropy_2"} <= set(summary)
    with pytest.raises(ValueError):
        summarize_scores([0.0], ["a", "b"])
