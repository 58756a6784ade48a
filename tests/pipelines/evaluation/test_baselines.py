"""Most-popular and Spark ALS: counting by hand, beating random on real and planted data, and
fold-in reproducing Spark's own user factors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.evaluation.baselines import (
    ALSConfig,
    ALSGrid,
    ALSRecommender,
    MostPopular,
    MostPopularConfig,
    select_als,
)
from pipelines.evaluation.metrics import evaluate
from pipelines.evaluation.splits import (
    LeaveOneOutSplit,
    index_interactions,
    leave_one_out_split,
)


class RandomScores:
    """The floor: independent uniform scores for every item."""

    name = "random"

    def __init__(self, n_items: int, seed: int = 0) -> None:
        self.n_items = n_items
        self.rng = np.random.default_rng(seed)

    def fit(self, split) -> None:
        pass

    def score(self, histories: list[np.ndarray]) -> np.ndarray:
        return self.rng.random((len(histories), self.n_items), dtype=np.float32)


def _split(rows: list[tuple[str, str, int]]) -> LeaveOneOutSplit:
    frame = pd.DataFrame(rows, columns=["user_id", "title_id", "ts"])
    return leave_one_out_split(index_interactions(frame))


def test_most_popular_counts_training_interactions_in_the_window():
    day = 86_400
    rows = [("u1", "a", 0), ("u1", "b", 1), ("u1", "x", 90 * day)]
    rows += [("u2", "b", 2), ("u2", "c", 80 * day), ("u2", "c", 85 * day), ("u2", "y", 91 * day)]
    rows += [("u3", "a", 3), ("u3", "a", 4), ("u3", "z", 92 * day), ("u3", "z", 93 * day)]
    split = _split(rows)  # training: u1 a; u2 b, c; u3 a, a; latest training ts: day 80
    everything = MostPopular()
    everything.fit(split)
    # Items a, b, c, x, y, z.
    assert everything.score([np.array([0])]).tolist() == [[3, 1, 1, 0, 0, 0]]
    recent = MostPopular(MostPopularConfig(window_days=10))
    recent.fit(split)
    assert recent.score([np.array([]), np.array([1])]).tolist() == [[0, 0, 1, 0, 0, 0]] * 2


def test_most_popular_beats_random_on_real_movielens(shared_datasets: Path):
    from pipelines.sources.movielens import read_ratings

    ratings = read_ratings(shared_datasets / "ml-100k")
    subset = ratings[ratings["user_id"].astype(int) <= 300]
    split = leave_one_out_split(index_interactions(subset))
    popular = MostPopular()
    popular.fit(split)
    popular_metrics = evaluate(popular, split.test)
    random_metrics = evaluate(RandomScores(split.n_items), split.test)
    assert popular_metrics["hr_at_50"] > 3 * random_metrics["hr_at_50"]
    assert popular_metrics["ndcg_at_10"] > 0.02  # random's expectation is about 0.003 here


def _planted(
    n_users: int = 60, n_items_per_group: int = 20, per_user: int = 12
) -> LeaveOneOutSplit:
    """Two taste groups: each user watches only titles of their own group (A or B)."""
    rng = np.random.default_rng(7)
    rows = []
    for u in range(n_users):
        group = "A" if u % 2 == 0 else "B"
        titles = rng.choice(n_items_per_group, size=per_user, replace=False)
        rows += [(f"u{u:03d}", f"{group}{t:02d}", ts) for ts, t in enumerate(titles)]
    return _split(rows)


def test_als_finds_planted_structure_and_fold_in_matches_spark(spark):
    split = _planted()
    als = ALSRecommender(spark, ALSConfig(rank=4, reg_param=0.05, alpha=10.0, max_iter=5, blocks=1))
    als.fit(split)
    als_metrics = evaluate(als, split.test)
    random_metrics = evaluate(RandomScores(split.n_items), split.test)
    # Half the catalogue is the user's group: ALS should put the target in the top 10 often.
    assert als_metrics["hr_at_10"] > 0.8 > random_metrics["hr_at_10"] + 0.3

    # Fold-in from each user's whole training history is Spark's last user step, exactly.
    bounds = split.train.user_bounds()
    users = list(range(10))
    folded = als.fold_in([split.train.item[bounds[u] : bounds[u + 1]] for u in users])
    spark_vectors = np.stack([als.spark_user_factors[u] for u in users])
    np.testing.assert_allclose(folded, spark_vectors, rtol=1e-3, atol=1e-4)


def test_select_als_picks_on_validation_and_reports_the_grid(spark):
    split = _planted(n_users=30)
    grid = ALSGrid(ranks=(2, 4), reg_params=(0.05,), alphas=(10.0,), max_iters=(5,), blocks=1)
    selection = select_als(spark, split, grid)
    assert len(selection.grid) == 2
    best = selection.grid.loc[selection.grid["ndcg_at_10"].idxmax()]
    assert selection.config.rank == best["rank"]
    assert selection.model.config == selection.config
    assert selection.model.item_factors.shape == (split.n_items, selection.config.rank)


def test_score_before_fit_raises():
    with pytest.raises(RuntimeError, match="fit"):
        MostPopular().score([np.array([0])])


def _cold_start_split(n_new: int, n_users: int = 400, seed: int = 0):
    """Members who watched old titles o0..o9 before the cut-off and then one of ``n_new`` titles
    released at the cut-off, chosen uniformly."""
    from pipelines.evaluation.splits import TemporalConfig, temporal_split

    rng = np.random.default_rng(seed)
    cutoff = 100 * 86_400
    rows = []
    for u in range(n_users):
        rows += [(f"u{u}", f"o{i}", i) for i in rng.choice(10, 3, replace=False)]
        rows.append((f"u{u}", f"n{rng.integers(n_new)}", cutoff + 60))
    frame = pd.DataFrame(rows, columns=["user_id", "title_id", "ts"])
    catalogue = [f"o{i}" for i in range(10)] + [f"n{i}" for i in range(n_new)]
    release = {f"n{i}": float(cutoff) for i in range(n_new)}
    return temporal_split(
        index_interactions(frame, catalogue=catalogue),
        TemporalConfig(cutoff_ts=cutoff),
        release_ts=release,
    )


def test_most_popular_new_orders_new_titles_at_random_not_by_ties():
    from pipelines.evaluation.baselines import MostPopularNew

    many = _cold_start_split(n_new=200)
    baseline = MostPopularNew()
    baseline.fit(many)
    scores = baseline.score([np.array([0])])[0]
    new = many.new_items
    assert new.sum() == 200 and scores[new].min() > scores[~new].max()
    assert len(np.unique(scores[new])) == 200  # no ties among the new titles
    # Nothing after the cut-off orders them: the expected recall of a random order, 50 / 200,
    # where ties counted against the target would give 0.
    recall = evaluate(baseline, many.test, new_items=new)["cold_start_recall_at_50"]
    assert 0.18 < recall < 0.32
    # With fewer new titles than K = 50 every new-title target is in its top 50.
    few = _cold_start_split(n_new=30)
    baseline.fit(few)
    assert evaluate(baseline, few.test, new_items=few.new_items)["cold_start_recall_at_50"] == 1.0
