"""Full-catalogue ranking metrics: ranks, ties, exclusion, HR/NDCG/MRR, the HR@K curve, oracle lists."""

import math

import numpy as np
import pytest

from shopsight.ranking import (
    NEVER,
    embedding_scorer,
    hit_rate_curve,
    rank_targets,
    ranking_metrics,
    ranks_from_scores,
    ranks_in_lists,
)


def test_rank_counts_every_item_scoring_at_least_the_target_and_ignores_padding():
    scores = np.array([[99.0, 0.1, 0.9, 0.5, 0.3]])  # column 0 is padding: never ranks
    assert ranks_from_scores(scores.copy(), np.array([3])).tolist() == [2.0]
    assert ranks_from_scores(scores.copy(), np.array([2])).tolist() == [1.0]


def test_ties_count_against_the_model():
    constant = np.ones((1, 6))
    assert ranks_from_scores(constant, np.array([1])).tolist() == [5.0]  # 5 real items all tied -> last


def test_excluded_items_drop_out_and_an_excluded_target_never_hits():
    scores = np.array([[0.0, 0.9, 0.8, 0.7]])
    rows, items = np.array([0]), np.array([1])
    assert ranks_from_scores(scores.copy(), np.array([2]), (rows, items)).tolist() == [1.0]
    assert ranks_from_scores(scores.copy(), np.array([1]), (rows, items)).tolist() == [NEVER]


def test_unknown_target_never_hits():
    assert ranks_from_scores(np.ones((1, 3)), np.array([0])).tolist() == [NEVER]


def test_batched_matrix_product_ranking_matches_brute_force():
    rng = np.random.default_rng(0)
    users, table = rng.normal(size=(37, 4)), rng.normal(size=(11, 4))
    targets = rng.integers(1, 11, size=37)
    indptr = np.arange(0, 38)  # each user excludes one item
    excluded = rng.integers(1, 11, size=37)
    ranks = rank_targets(embedding_scorer(users, table), targets, (indptr, excluded), batch_size=8)
    for u in range(37):
        s = users[u] @ table.T
        s[0] = -np.inf
        s[excluded[u]] = -np.inf
        assert ranks[u] == (NEVER if excluded[u] == targets[u] else (s >= s[targets[u]]).sum())


def test_metrics_from_ranks():
    ranks = np.array([1.0, 3.0, 15.0, NEVER])
    m = ranking_metrics(ranks, k=10, mrr_k=20)
    assert m["hr_at_10"] == pytest.approx(0.5)
    assert m["ndcg_at_10"] == pytest.approx((1.0 + 1.0 / math.log2(4)) / 4)
    assert m["mrr_at_20"] == pytest.approx((1 + 1 / 3 + 1 / 15) / 4)
    assert hit_rate_curve(ranks, 4).tolist() == [0.25, 0.25, 0.5, 0.5]
    with pytest.raises(ValueError):
        ranking_metrics(np.array([]))


def test_ranks_inside_given_lists_with_exclusion():
    lists = [np.array([5, 3, 7]), np.array([2, 4]), np.array([1])]
    indptr, indices = np.array([0, 1, 1, 1]), np.array([5])  # user 0 already bought 5
    ranks = ranks_in_lists(lists, np.array([3, 9, 0]), (indptr, indices))
    assert ranks.tolist() == [1.0, NEVER, NEVER]
