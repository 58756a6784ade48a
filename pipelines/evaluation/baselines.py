"""The baselines every model must beat: most-popular and implicit-feedback ALS (Spark ML).

Most-popular ranks titles by how often they were watched in a recent window of training
interactions; it is the floor a sequential model has to clear by a wide margin.
Most-popular-among-new puts the titles released after a temporal split's cut-off first, in a
seeded random order (nothing else is known about them at the cut-off): the floor of cold-start
recall. ALS is Spark's implicit-feedback matrix factorisation (Hu, Koren &
Volinsky, "Collaborative Filtering for Implicit Feedback Datasets", ICDM 2008), fitted on a
split's training interactions.

Scoring a history with ALS uses fold-in rather than the user factors Spark learned: given the
learned item factors Y, a user's vector is the exact least-squares step Spark's own final
iteration takes for a user, x = (YᵀY + Yᵀ(C - I)Y + λ·n·I)⁻¹ YᵀC p, with confidence c = 1 + α·r
for each of the n items the user interacted with (r = interactions with that item) and Spark's
count-scaled regularisation λ·n. So ALS scores any history, including the leave-one-out test
history that ends with the validation item, without refitting: the validation item moves the
user's vector while the item factors stay those fitted on training data only. Hyperparameters are
chosen on the validation targets alone (``select_als``). The MovieLens benchmark then refits the
chosen config on training + validation (``merge_validation_into_train``) before the test step, so
the item factors learn from the validation interactions too; on ml-100k the two ways differ by
noise (test NDCG@10 0.0726 with fold-in only, 0.0733 refitted).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
from pyspark.sql import SparkSession

from pipelines.evaluation.metrics import evaluate
from pipelines.evaluation.splits import Interactions, LeaveOneOutSplit, TemporalSplit

_SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class MostPopularConfig:
    """How most-popular counts."""

    window_days: float | None = None  # count only the last N days before the latest training
    # interaction (a trending list); None counts every training interaction


class MostPopular:
    """Scores every title by its interaction count in the training window, the same for all."""

    name = "most_popular"

    def __init__(self, config: MostPopularConfig = MostPopularConfig()) -> None:
        self.config = config
        self._counts: np.ndarray | None = None  # (n_items,) float32 interactions in the window

    def fit(self, split: LeaveOneOutSplit | TemporalSplit) -> None:
        train = split.train
        if len(train) == 0:
            raise ValueError("most-popular needs at least one training interaction")
        in_window = np.ones(len(train), dtype=bool)
        if self.config.window_days is not None:
            start = train.ts.max() - self.config.window_days * _SECONDS_PER_DAY
            in_window = train.ts >= start
        counts = np.bincount(train.item[in_window], minlength=train.n_items)
        self._counts = counts.astype(np.float32)

    def score(self, histories: list[np.ndarray]) -> np.ndarray:
        if self._counts is None:
            raise RuntimeError("call fit before score")
        return np.tile(self._counts, (len(histories), 1))  # (B, n_items)


class MostPopularNew:
    """Most-popular with every new title ahead of every older one: the cold-start baseline.

    "New" is the temporal split's ``new_items`` (released at or after the cut-off, which the
    catalogue knows at prediction time). New titles come first in a random order fixed by
    ``seed``, then every other title by its training-window count. A new title has no
    interactions before the cut-off and its popularity after it is the future, so nothing known
    orders the new titles: counting them all as tied would put every new-title target below
    all of them (ties count against the target) and give recall@K = 0 as soon as more than K
    titles are new. A random order gives its expected recall, about K / (new titles); with
    fewer unseen new titles than K, every new-title target is in its top K by construction.
    """

    name = "most_popular_new"

    def __init__(self, config: MostPopularConfig = MostPopularConfig(), seed: int = 0) -> None:
        self._popular = MostPopular(config)
        self._seed = seed  # fixes the order of the new titles
        self._scores: np.ndarray | None = None  # (n_items,) float32

    def fit(self, split: LeaveOneOutSplit | TemporalSplit) -> None:
        if not isinstance(split, TemporalSplit):
            raise ValueError("most-popular-among-new needs a temporal split (its new titles)")
        self._popular.fit(split)
        counts = self._popular.score([np.zeros(0, dtype=np.int64)])[0]  # (n_items,)
        new = np.flatnonzero(split.new_items)
        order = np.random.default_rng(self._seed).permutation(len(new))  # (n_new,)
        scores = counts.astype(np.float64)
        # Above every count, each new title at its own place in the random order.
        scores[new] = counts.max() + 1.0 + order
        self._scores = scores.astype(np.float32)

    def score(self, histories: list[np.ndarray]) -> np.ndarray:
        if self._scores is None:
            raise RuntimeError("call fit before score")
        return np.tile(self._scores, (len(histories), 1))  # (B, n_items)


@dataclass(frozen=True)
class ALSConfig:
    """One setting of Spark's implicit ALS."""

    rank: int = 32  # latent factors per user and item
    reg_param: float = 0.05  # λ; Spark multiplies it by each user's (item's) interaction count
    alpha: float = 10.0  # confidence slope: an item seen r times has confidence 1 + alpha·r
    max_iter: int = 10  # alternating sweeps (each solves items, then users)
    seed: int = 0  # Spark's factor initialisation seed, for reproducible numbers
    blocks: int = 2  # user and item blocks Spark partitions factors into; Spark's default of 10
    # only adds task overhead below millions of interactions or on a few cores


class ALSRecommender:
    """Spark ML ``ALS(implicitPrefs=True)`` on training interactions, scored by fold-in."""

    name = "als"

    def __init__(self, spark: SparkSession, config: ALSConfig = ALSConfig()) -> None:
        self.spark = spark
        self.config = config
        self.item_factors: np.ndarray | None = None  # (n_items, rank) float32; 0 if untrained
        self.spark_user_factors: dict[int, np.ndarray] = {}  # user index -> Spark's own vector

    def fit(self, split: LeaveOneOutSplit | TemporalSplit) -> None:
        from pyspark.ml.recommendation import ALS

        ratings = _implicit_ratings(split.train)
        if ratings.empty:
            raise ValueError("ALS needs at least one training interaction")
        frame = self.spark.createDataFrame(ratings)
        als = ALS(
            rank=self.config.rank,
            maxIter=self.config.max_iter,
            regParam=self.config.reg_param,
            alpha=self.config.alpha,
            implicitPrefs=True,
            userCol="user",
            itemCol="item",
            ratingCol="rating",
            seed=self.config.seed,
            numUserBlocks=self.config.blocks,
            numItemBlocks=self.config.blocks,
        )
        model = als.fit(frame)
        items = model.itemFactors.toPandas()
        factors = np.zeros((split.n_items, self.config.rank), dtype=np.float32)
        factors[items["id"].to_numpy()] = np.stack(items["features"].to_numpy())
        self.item_factors = factors
        users = model.userFactors.toPandas()
        self.spark_user_factors = {
            int(u): np.asarray(v, dtype=np.float32)
            for u, v in zip(users["id"], users["features"], strict=True)
        }

    def fold_in(self, histories: list[np.ndarray]) -> np.ndarray:
        """(B, rank) user vectors: Spark's user least-squares step against the item factors."""
        if self.item_factors is None:
            raise RuntimeError("call fit before score")
        y = torch.from_numpy(self.item_factors).double()  # (N, R)
        trained = y.abs().sum(dim=1) > 0  # (N,) items that had training interactions
        batch, rank = len(histories), y.shape[1]
        uniques = [np.unique(h, return_counts=True) for h in histories]
        width = max((len(items) for items, _ in uniques), default=0)
        items = torch.zeros((batch, width), dtype=torch.long)  # (B, L) padded with item 0
        counts = torch.zeros((batch, width), dtype=torch.float64)  # (B, L) 0 at padding
        for row, (ids, n) in enumerate(uniques):
            items[row, : len(ids)] = torch.from_numpy(ids.astype(np.int64))
            counts[row, : len(ids)] = torch.from_numpy(n.astype(np.float64))
        counts = counts * trained[items]  # an item Spark never saw carries no signal
        confidence_minus_one = self.config.alpha * counts  # (B, L)
        positive = (counts > 0).double()  # (B, L)
        factors = y[items]  # (B, L, R)
        gram = y.T @ y  # (R, R)
        a = gram + torch.einsum("blr,bl,bls->brs", factors, confidence_minus_one, factors)
        reg = self.config.reg_param * positive.sum(dim=1)  # (B,)
        a = a + reg[:, None, None] * torch.eye(rank, dtype=torch.float64)  # (B, R, R)
        b = torch.einsum("blr,bl->br", factors, (1.0 + confidence_minus_one) * positive)
        return torch.linalg.solve(a, b).float().numpy()  # (B, R)

    def score(self, histories: list[np.ndarray]) -> np.ndarray:
        users = self.fold_in(histories)  # (B, R)
        return users @ self.item_factors.T  # (B, n_items)


def _implicit_ratings(train: Interactions) -> pd.DataFrame:
    """One row per (user, item) with ``rating`` = how many times the user interacted with it."""
    pairs = pd.DataFrame({"user": train.user.astype(np.int32), "item": train.item.astype(np.int32)})
    counted = pairs.groupby(["user", "item"], sort=False).size().rename("rating").reset_index()
    counted["rating"] = counted["rating"].astype(np.float32)
    return counted


@dataclass(frozen=True)
class ALSGrid:
    """The small grid ``select_als`` searches; every combination is one Spark fit."""

    ranks: tuple[int, ...] = (32, 64)  # candidate ALSConfig.rank values
    reg_params: tuple[float, ...] = (0.01, 0.1)  # candidate ALSConfig.reg_param values
    alphas: tuple[float, ...] = (1.0, 10.0, 40.0)  # candidate ALSConfig.alpha (Hu et al.: 40)
    max_iters: tuple[int, ...] = (10,)  # candidate ALSConfig.max_iter values
    seed: int = 0  # one seed for every fit, so configs differ only in their parameters
    blocks: int = 2  # ALSConfig.blocks for every fit (a speed knob, not a hyperparameter)

    def configs(self) -> list[ALSConfig]:
        return [
            ALSConfig(
                rank=r, reg_param=lam, alpha=a, max_iter=it, seed=self.seed, blocks=self.blocks
            )
            for r, lam, a, it in itertools.product(
                self.ranks, self.reg_params, self.alphas, self.max_iters
            )
        ]


@dataclass(frozen=True)
class ALSSelection:
    """The outcome of the validation grid search."""

    model: ALSRecommender  # fitted on split.train with the best config
    config: ALSConfig  # the config with the best validation NDCG@10
    grid: pd.DataFrame  # one row per config: its fields plus validation ndcg_at_10 and hr_at_10


def select_als(
    spark: SparkSession,
    split: LeaveOneOutSplit,
    grid: ALSGrid = ALSGrid(),
    batch_size: int = 1024,
) -> ALSSelection:
    """Fit every grid config on ``split.train``; keep the best by validation NDCG@10.

    The test targets are never looked at. The returned model is scored on ``split.test`` as is:
    fold-in puts the validation item into each user's vector (see the module docstring).
    """
    rows, best, best_ndcg = [], None, -1.0
    for config in grid.configs():
        model = ALSRecommender(spark, config)
        model.fit(split)
        metrics = evaluate(model, split.validation, batch_size)
        rows.append({**asdict(config), **{k: metrics[k] for k in ("ndcg_at_10", "hr_at_10")}})
        if metrics["ndcg_at_10"] > best_ndcg:
            best, best_ndcg = model, metrics["ndcg_at_10"]
    if best is None:
        raise ValueError("the ALS grid is empty; give at least one value for every field")
    return ALSSelection(model=best, config=best.config, grid=pd.DataFrame(rows))
