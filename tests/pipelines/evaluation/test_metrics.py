"""Full-ranking metrics worked by hand on tiny cases, plus the loud failures.

One relevant item per case, so NDCG@K = 1/log2(rank + 1) inside the top K: a target at rank 3
scores 1/log2(4) = 0.5, at rank 1 scores 1.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from pipelines.evaluation.metrics import (
    RankedTargets,
    Recommender,
    evaluate,
    full_ranks,
    paired_ndcg_difference,
    rank_targets,
    ranks_from_top_k,
    summarise,
)
from pipelines.evaluation.splits import NO_TARGET, EvalSet


class FixedScores:
    """Returns the given rows of a fixed (U, n_items) score matrix, in call order."""

    name = "fixed"

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = np.asarray(scores, dtype=np.float32)
        self.calls = 0

    def fit(self, split) -> None:
        pass

    def score(self, histories: list[np.ndarray]) -> np.ndarray:
        rows = self.scores[self.calls : self.calls + len(histories)]
        self.calls += len(histories)
        return rows


def _eval_set(histories: list[list[int]], targets: list[list[int]], n_items: int) -> EvalSet:
    return EvalSet(
        users=np.arange(len(histories), dtype=np.int64),
        histories=[np.asarray(h, dtype=np.int64) for h in histories],
        exclude=[np.asarray(h, dtype=np.int64) for h in histories],
        targets=np.asarray(targets, dtype=np.int64),
        target_ts=np.zeros((len(targets), len(targets[0])), dtype=np.int64),
        n_items=n_items,
    )


def test_fixed_scores_follows_the_protocol():
    assert isinstance(FixedScores(np.zeros((1, 1))), Recommender)


def test_target_at_rank_three():
    # Item 2 is the target; items 4 and 0 score higher.
    scores = np.array([[0.9, 0.1, 0.5, 0.2, 0.95]])
    metrics = evaluate(FixedScores(scores), _eval_set([[]], [[2]], 5))
    assert metrics["hr_at_10"] == 1.0
    assert metrics["ndcg_at_10"] == pytest.approx(1 / math.log2(4)) == pytest.approx(0.5)
    assert metrics["mrr"] == pytest.approx(1 / 3)
    assert metrics["coverage_at_10"] == 1.0  # 5 items, all in the one top-10 list


def test_seen_items_are_excluded_from_the_ranking():
    # The two items scored above the target are in the history, so the target is first.
    scores = np.array([[0.9, 0.1, 0.5, 0.2, 0.95]])
    metrics = evaluate(FixedScores(scores), _eval_set([[0, 4]], [[2]], 5))
    assert metrics["ndcg_at_10"] == 1.0 and metrics["mrr"] == 1.0
    assert metrics["coverage_at_10"] == pytest.approx(3 / 5)  # items 0 and 4 are never listed


def test_ties_count_against_the_target():
    # A constant scorer must not look perfect: the target ranks behind all 11 other unseen items.
    scores = np.ones((1, 14))
    ranked = rank_targets(FixedScores(scores), _eval_set([[0, 1]], [[5]], 14))
    assert ranked.ranks.tolist() == [[12.0]]
    assert summarise(ranked)["hr_at_10"] == 0.0


def test_a_target_in_the_history_is_still_ranked():
    # A re-watch: item 1 is both seen and the target; item 0 is seen and excluded.
    scores = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    excluded = torch.tensor([[True, True, False, False]])
    ranks = full_ranks(scores, torch.tensor([[1]]), excluded)
    assert ranks.tolist() == [[1.0]]


def test_metrics_average_over_cases_and_skip_padding():
    # User 0: targets at ranks 1 and 2; user 1: one target at rank 60, one pad.
    scores = np.zeros((2, 100), dtype=np.float32)
    scores[0, :3] = [3, 2, 1]
    scores[1] = -np.arange(100)  # item i ranks i + 1
    ranked = rank_targets(FixedScores(scores), _eval_set([[], []], [[0, 1], [59, NO_TARGET]], 100))
    assert np.array_equal(ranked.ranks, [[1.0, 2.0], [60.0, np.nan]], equal_nan=True)
    metrics = summarise(ranked)
    assert metrics["n_cases"] == 3
    assert metrics["hr_at_10"] == pytest.approx(2 / 3)
    assert metrics["hr_at_50"] == pytest.approx(2 / 3)
    assert metrics["ndcg_at_10"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert metrics["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 60) / 3)
    # Per-case NDCG@10: 1, 1/log2(3), 0 (rank 60 is outside the top 10).
    gains = np.array([1.0, 1 / math.log2(3), 0.0])
    assert metrics["ndcg_at_10_se"] == pytest.approx(gains.std(ddof=1) / math.sqrt(3))
    # Top-10 lists: user 0 -> items 0, 1, 2 and 7 of the tied zeros; user 1 -> items 0..9.
    assert 10 / 100 <= metrics["coverage_at_10"] <= 17 / 100


def test_cold_start_recall_counts_only_new_title_targets():
    scores = -np.arange(100, dtype=np.float32)[None, :].repeat(3, axis=0)
    new_items = np.zeros(100, dtype=bool)
    new_items[[10, 70]] = True  # item 10 ranks 11th (inside 50), item 70 ranks 71st
    eval_set = _eval_set([[], [], []], [[10], [70], [5]], 100)
    ranked = rank_targets(FixedScores(scores), eval_set, new_items=new_items)
    metrics = summarise(ranked, new_items)
    assert metrics["cold_start_recall_at_50"] == pytest.approx(0.5)
    assert metrics["n_cold_start_cases"] == 2
    # Among the new titles alone item 10 is 1st and item 70 2nd: both inside 50.
    assert np.array_equal(ranked.new_ranks[:, 0], [1.0, 2.0, np.nan], equal_nan=True)
    assert metrics["cold_start_recall_at_50_among_new"] == pytest.approx(1.0)
    no_new = summarise(ranked, np.zeros(100, dtype=bool))
    assert "cold_start_recall_at_50" not in no_new and no_new["n_cold_start_cases"] == 0
    # Ranked without new_items: the whole-catalogue recall only.
    plain = summarise(rank_targets(FixedScores(scores), eval_set), new_items)
    assert plain["cold_start_recall_at_50"] == 0.5
    assert "cold_start_recall_at_50_among_new" not in plain


def test_cold_start_ranks_skip_seen_new_titles_and_old_ones():
    # 60 new titles (40..99) scored above the target's, except those the user has seen.
    scores = np.zeros((1, 200), dtype=np.float32)
    scores[0, 40:100] = 10.0
    scores[0, 100:200] = 20.0  # old titles outscore everything: not counted among the new
    scores[0, 150] = 5.0  # the target, a new title
    new_items = np.zeros(200, dtype=bool)
    new_items[40:100] = True
    new_items[150] = True
    seen = list(range(40, 55))  # 15 of the better new titles were seen
    ranked = rank_targets(FixedScores(scores), _eval_set([seen], [[150]], 200), new_items=new_items)
    assert ranked.new_ranks[0, 0] == 60 - 15 + 1
    assert ranked.ranks[0, 0] == 99 + 45 + 1  # titles 100..199 but the target itself
    metrics = summarise(ranked, new_items)
    assert metrics["cold_start_recall_at_50_among_new"] == 1.0
    assert metrics["cold_start_recall_at_50"] == 0.0


def test_batches_do_not_change_the_result():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(37, 200)).astype(np.float32)
    histories = [
        rng.choice(200, size=rng.integers(0, 20), replace=False).tolist() for _ in range(37)
    ]
    targets = [[int(rng.choice(np.setdiff1d(np.arange(200), h)))] for h in histories]
    eval_set = _eval_set(histories, targets, 200)
    whole = evaluate(FixedScores(scores), eval_set, batch_size=1000)
    batched = evaluate(FixedScores(scores), eval_set, batch_size=5)
    assert whole == batched
    # And the same as a direct argsort for every user.
    expected = []
    for row, history, (target,) in zip(scores, histories, targets, strict=True):
        order = [i for i in np.argsort(-row, kind="stable") if i not in history]
        expected.append(order.index(target) + 1)
    assert rank_targets(FixedScores(scores), eval_set, 4).ranks[:, 0].tolist() == expected


def test_ranks_from_top_k_lists():
    top_k = np.array([[4, 2, 9], [1, 3, 5]])
    ranks = ranks_from_top_k(top_k, np.array([[2, NO_TARGET], [7, 5]]))
    assert np.array_equal(ranks, [[2.0, np.nan], [np.inf, 3.0]], equal_nan=True)


@pytest.mark.parametrize(
    ("scores", "message"),
    [(np.full((1, 5), np.nan), "NaN"), (np.zeros((1, 4)), "shape")],
)
def test_broken_scores_raise_instead_of_scoring_zero(scores, message):
    with pytest.raises(ValueError, match=message):
        evaluate(FixedScores(scores), _eval_set([[]], [[1]], 5))


def test_an_empty_evaluation_set_raises():
    with pytest.raises(ValueError, match="no targets"):
        evaluate(FixedScores(np.zeros((1, 5))), _eval_set([[]], [[NO_TARGET]], 5))


def test_paired_difference_is_taken_case_by_case():
    # Two models on the same three targets; the reference is one rank behind on each case.
    ranks = np.array([[1.0], [3.0], [9.0]])
    mine = RankedTargets(
        ranks=ranks,
        targets=np.array([[0], [1], [2]]),
        target_ts=np.zeros((3, 1), dtype=np.int64),
        history_length=np.ones(3, dtype=np.int64),
        top_items=np.zeros((3, 10), dtype=np.int64),
        n_items=20,
    )
    behind = replace(mine, ranks=ranks + 1)
    diff = paired_ndcg_difference(mine, behind)
    per_case = 1 / np.log2(ranks[:, 0] + 1) - 1 / np.log2(ranks[:, 0] + 2)
    assert diff["ndcg_at_10_difference"] == pytest.approx(per_case.mean())
    assert diff["se"] == pytest.approx(per_case.std(ddof=1) / math.sqrt(3))
    assert diff["ci95_low"] == pytest.approx(per_case.mean() - 1.96 * diff["se"])
    assert diff["ci95_low"] < 0  # three cases this uneven cannot tell the models apart
    assert diff["n_cases"] == 3
    assert paired_ndcg_difference(mine, mine)["se"] == 0.0
    other_targets = replace(mine, targets=mine.targets + 1)
    with pytest.raises(ValueError, match="same targets"):
        paired_ndcg_difference(mine, other_targets)
