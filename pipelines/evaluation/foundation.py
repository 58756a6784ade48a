"""The foundation model as an evaluation ``Recommender``, and its SASRec ablation.

``FoundationRecommender`` trains a ``FoundationModel`` on a split's training interactions with
the shared loop (``pipelines.training.train``) and scores the whole catalogue from each history's
latest window. Epochs are chosen by early stopping on the split's *validation* targets (the
leave-one-out second-to-last item, or each member's last training token for a temporal split);
the test targets are never looked at. As in SASRec, the model is not refitted after selection:
the test history already ends with the validation item, which the model reads as input.

The full model also reads each token's features (the action, for MovieLens the rating bucket)
and the moment of the request (its freshness bias), so it is scored as a ``MemberRecommender``:
``score_members`` gets each member, history and decision time, and takes that member's own
features. ``score`` receives item arrays only (the ``Recommender`` protocol) and scores without
a request time. ``TokenFeatures`` carries those features aligned with the unsplit interactions;
because every split's training rows and evaluation histories are a prefix of a member's
chronological rows, ``score_members`` finds a member's features by position, and ``fit`` looks
up the features of each evaluated history once so that ``score`` finds them again by the
history's exact content. A history ``fit`` did not see raises instead of being scored with
invented features.
``from_pretrained`` wraps an already trained model (the registered ``models/foundation``
version) instead of training one, for the ``eval/report`` asset.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipelines.evaluation.splits import EvalSet, Interactions, LeaveOneOutSplit, TemporalSplit
from pipelines.models import FoundationConfig, FoundationModel, SequenceBatch, pretraining_loss
from pipelines.models.config import TOKEN_FEATURES
from pipelines.models.metadata import title_metadata
from pipelines.models.windows import (
    LastTokenDataset,
    UserSequences,
    WindowDataset,
    collate_windows,
    split_last_token,
)
from pipelines.schemas import ACTIONS
from pipelines.training.loop import TRAIN_PRESETS, TrainConfig, TrainResult, seed_everything, train

NEUTRAL_ACTION = ACTIONS.index("watched")
"""Action of a token whose real action is unknown (and of every token when features are off)."""
FEATURE_ROWS = 6
"""Token feature rows after the title: action, watch fraction, gap, device, hour, weekday."""
_SECONDS_PER_DAY = 86_400


def interactions_ts(frame: pd.DataFrame, ts_col: str = "ts") -> np.ndarray:
    """(N,) int64 unix seconds of ``frame[ts_col]``, as ``index_interactions`` counts them."""
    values = frame[ts_col]
    if pd.api.types.is_datetime64_any_dtype(values):
        values = (values - pd.Timestamp(0, tz=values.dt.tz)) // pd.Timedelta(seconds=1)
    return values.to_numpy().astype(np.int64)


def rating_actions(ratings: np.ndarray) -> np.ndarray:
    """MovieLens ratings as action ids: rated_high (>= 4), rated_low (<= 2), else watched."""
    actions = np.full(len(ratings), NEUTRAL_ACTION, dtype=np.int64)
    actions[ratings >= 4] = ACTIONS.index("rated_high")
    actions[ratings <= 2] = ACTIONS.index("rated_low")
    return actions


@dataclass(frozen=True)
class TokenFeatures:
    """Token features of every interaction of an (unsplit) ``Interactions``, row-aligned."""

    interactions: Interactions  # the interactions the split was cut from
    features: np.ndarray  # (6, N) int64: action, watch bucket, gap bucket, device, hour, weekday
    known: tuple[str, ...] = TOKEN_FEATURES  # features the data has; the others are filler 0s

    def __post_init__(self) -> None:
        if self.features.shape != (FEATURE_ROWS, len(self.interactions)):
            raise ValueError(
                f"features must be ({FEATURE_ROWS}, {len(self.interactions)}), "
                f"got {self.features.shape}"
            )

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        interactions: Interactions,
        features: np.ndarray,
        user_col: str = "user_id",
        item_col: str = "title_id",
        known: tuple[str, ...] = TOKEN_FEATURES,
    ) -> TokenFeatures:
        """``features`` (6, N) given in ``frame``'s row order, reordered to match
        ``interactions = index_interactions(frame, ...)`` (user, then time, then input order)."""
        users = np.searchsorted(interactions.user_ids.astype(str), frame[user_col].astype(str))
        ts = interactions_ts(frame)
        order = np.lexsort((np.arange(len(frame)), ts, users))
        items = np.searchsorted(interactions.item_ids.astype(str), frame[item_col].astype(str))
        if not np.array_equal(items[order], interactions.item):
            raise ValueError("frame and interactions disagree: index this same frame")
        return cls(interactions, np.asarray(features, dtype=np.int64)[:, order], known)

    @classmethod
    def from_actions(
        cls, frame: pd.DataFrame, interactions: Interactions, actions: np.ndarray
    ) -> TokenFeatures:
        """Only the action is known (MovieLens ratings); the other features stay 0."""
        features = np.zeros((FEATURE_ROWS, len(frame)), dtype=np.int64)
        features[0] = actions
        return cls.from_frame(frame, interactions, features, known=("action",))

    @cached_property
    def _bounds(self) -> np.ndarray:
        return self.interactions.user_bounds()

    def prefix(self, user: int, length: int, items: np.ndarray) -> np.ndarray:
        """(6, len(items)) features of ``items``, the tail of ``user``'s first ``length`` rows."""
        start = int(self._bounds[user])
        rows = slice(start + length - len(items), start + length)
        if not np.array_equal(self.interactions.item[rows], items):
            raise ValueError(
                f"user {user}'s history is not a prefix of its interactions: the features "
                "belong to other interactions than the split"
            )
        return self.features[:, rows]


@dataclass(frozen=True)
class FoundationFitConfig:
    """How ``FoundationRecommender`` builds and trains its model."""

    name: str = "foundation"  # row label in reports
    model_preset: str = "demo"  # FoundationConfig size preset (pipelines.models.config.PRESETS)
    model_overrides: Mapping[str, Any] = field(default_factory=dict)  # FoundationConfig fields
    train_preset: str = "demo"  # TrainConfig preset (pipelines.training.loop.TRAIN_PRESETS)
    train_overrides: Mapping[str, Any] = field(default_factory=dict)  # TrainConfig fields
    # CPU-time budget (time.process_time, all of this process's threads summed): sets
    # max_steps from timed steps, so a loaded machine slows the run but does not shorten it.
    train_minutes: float | None = None
    calibration_steps: int = 10  # steps timed on a throwaway copy to turn minutes into steps
    seed: int = 0  # model init, data order and every RNG of the run


SASREC_OVERRIDES: dict[str, Any] = {
    "use_token_features": False,
    "use_metadata": False,
    "freshness_buckets": 0,
    "mtp_n": 0,
    "genre_weight": 0.0,
}
"""The SASRec ablation: titles and positions only, next-title loss only (no freshness bias)."""

FIT_PRESETS: dict[str, FoundationFitConfig] = {
    # Seconds: unit tests on planted data.
    "tiny": FoundationFitConfig(
        model_preset="tiny",
        train_preset="tiny",
        model_overrides={"mtp_n": 1, "genre_weight": 0.1},
        train_overrides={
            "max_steps": 150,
            "eval_every": 25,
            "early_stopping_metric": "next_title_loss",
            "early_stopping_patience": 3,
        },
    ),
    # MovieLens on 2 CPU cores: SASRec's ml-100k shape (2 blocks, history 200), full softmax,
    # validated every 100 steps; give it a budget with train_minutes. No multi-token
    # prediction: its second full softmax costs ~40% of a CPU step and, at equal steps, did
    # not lower the validation loss on ml-100k (at weight 0.5 it raised it). No title metadata
    # (so no genre head): on ml-100k's validation items, 3 CPU minutes, it raised the
    # next-title loss (6.145 -> 6.178 with the genre head, 6.195 without) and lowered NDCG@10;
    # the rating actions alone lowered it below the ablation's (6.149). Leave-one-out
    # MovieLens has almost no cold-start titles for metadata to help with.
    "cpu": FoundationFitConfig(
        model_preset="demo",
        train_preset="demo",
        model_overrides={
            "dropout": 0.2,
            "window_stride": 200,
            "mtp_n": 0,
            "use_metadata": False,
            "genre_weight": 0.0,
        },
        train_overrides={
            "max_epochs": 200,
            "batch_size": 128,
            "eval_every": 100,
            "early_stopping_metric": "next_title_loss",
            "early_stopping_patience": 5,
            "checkpoint_every": 0,
            "progress": False,
        },
    ),
}
"""Named fit settings; the SASRec variant is any of them with ``sasrec(...)``."""


def sasrec(config: FoundationFitConfig) -> FoundationFitConfig:
    """``config`` turned into the SASRec ablation (same size, loop and budget)."""
    return replace(
        config, name="sasrec", model_overrides={**config.model_overrides, **SASREC_OVERRIDES}
    )


class FoundationRecommender:
    """A ``FoundationModel`` behind the evaluation ``Recommender`` protocol (item index = title)."""

    def __init__(
        self,
        config: FoundationFitConfig = FIT_PRESETS["tiny"],
        titles: pd.DataFrame | None = None,
        features: TokenFeatures | None = None,
    ) -> None:
        """``titles``: a ``bronze/titles`` frame (needed when the model uses metadata);
        ``features``: token features of the interactions splits are cut from (None: neutral)."""
        self.config = config
        self.name = config.name
        self.titles = titles
        self.features = features
        self.model: FoundationModel | None = None
        self.train_result: TrainResult | None = None
        self.loss_history: list[float] = []  # training loss per step, for the report's plot
        self.fit_seconds = 0.0  # wall-clock
        self.fit_cpu_seconds = 0.0  # CPU time of this process (what train_minutes budgets)
        self._pretrained = False  # wraps a trained model: fit only learns the split's histories
        self._item_to_title: np.ndarray | None = None  # (n_items,) model title index per item
        self._history_features: dict[bytes, np.ndarray | None] = {}  # None: ambiguous owner

    @classmethod
    def from_pretrained(
        cls,
        model: FoundationModel,
        item_to_title: np.ndarray,
        features: TokenFeatures | None = None,
        name: str = "foundation",
    ) -> FoundationRecommender:
        """Wrap a trained model; ``item_to_title`` (n_items,) maps item index to title index."""
        recommender = cls(FoundationFitConfig(name=name), features=features)
        recommender.model = model.eval()
        recommender._pretrained = True
        recommender._item_to_title = np.asarray(item_to_title, dtype=np.int64)
        return recommender

    # ---------------------------------------------------------------------------------- fit

    def fit(self, split: LeaveOneOutSplit | TemporalSplit) -> None:
        if self._pretrained:
            self._remember_histories(split)
            return
        started, started_cpu = time.perf_counter(), time.process_time()
        train_seqs, val_seqs = self._sequences(split)
        model_config, train_config = self._configs(split, train_seqs)
        data = WindowDataset(train_seqs, model_config.max_len, model_config.window_stride)
        val_data = LastTokenDataset(val_seqs, model_config.max_len)
        if self.config.train_minutes is not None:
            steps = self._steps_for_budget(split, model_config, train_config, data)
            train_config = replace(train_config, max_steps=steps, max_epochs=None)
        model = self._build(split, model_config)
        losses: list[float] = []

        def record(metrics: dict[str, float], step: int) -> None:
            if "train/loss" in metrics:
                losses.append(metrics["train/loss"])

        self.train_result = train(
            model, pretraining_loss, data, train_config, collate_windows, val_data,
            log_metrics=record,
        )  # fmt: skip
        self.model = model.eval()
        self.loss_history = losses
        self._item_to_title = np.arange(split.n_items, dtype=np.int64)
        self._remember_histories(split)
        self.fit_seconds = time.perf_counter() - started
        self.fit_cpu_seconds = time.process_time() - started_cpu

    def _configs(
        self, split: LeaveOneOutSplit | TemporalSplit, train_seqs: UserSequences
    ) -> tuple[FoundationConfig, TrainConfig]:
        genres = self._genres()
        model_config = FoundationConfig.from_preset(
            self.config.model_preset,
            **{
                "num_titles": split.n_items,
                "num_genres": len(genres),
                "genres": genres or None,
                # Embed only the features the data has: filler columns would only add a bias.
                "token_features": list(self.features.known) if self.features is not None else [],
                **self.config.model_overrides,
            },
        )
        base = TRAIN_PRESETS[self.config.train_preset]
        train_config = replace(base, seed=self.config.seed, **self.config.train_overrides)
        return model_config, train_config

    def _genres(self) -> list[str]:
        if self.titles is None:
            return []
        return sorted({g for row in self.titles["genres"] if row is not None for g in row})

    def _build(
        self, split: LeaveOneOutSplit | TemporalSplit, model_config: FoundationConfig
    ) -> FoundationModel:
        seed_everything(self.config.seed)
        model = FoundationModel(model_config)
        train = split.train
        if model_config.use_metadata:
            if self.titles is None:
                raise ValueError(
                    f"{self.name} uses title metadata: pass titles (a bronze/titles frame)"
                )
            cutoff = dt.datetime.fromtimestamp(int(train.ts.max()), dt.UTC).date()
            item_ids = [str(i) for i in train.item_ids]
            trained = {item_ids[i] for i in np.unique(train.item)}
            titles = self.titles.assign(title_id=self.titles["title_id"].astype(str))
            meta = title_metadata(titles, item_ids, self._genres(), cutoff, trained)
            model.set_title_metadata(meta.features, meta.age_days, meta.trained_mask)
        return model

    def _steps_for_budget(
        self,
        split: LeaveOneOutSplit | TemporalSplit,
        model_config: FoundationConfig,
        train_config: TrainConfig,
        data: WindowDataset,
    ) -> int:
        """Optimizer steps that fit ``train_minutes`` of CPU time, timed on a throwaway copy.

        CPU time of this process (``time.process_time``), not wall-clock: other processes on a
        shared machine then cost the run wall time, never steps. With one torch thread the
        budget is that many minutes of one-thread CPU training.
        """
        n = self.config.calibration_steps
        probe = replace(train_config, max_steps=n, eval_every=0, early_stopping_patience=0)
        started = time.process_time()
        train(self._build(split, model_config), pretraining_loss, data, probe, collate_windows)
        per_step = (time.process_time() - started) / n
        # Validation passes and the calibration itself also spend the budget; keep 15% for them.
        budget = self.config.train_minutes * 60 * 0.85 - per_step * n
        return max(int(budget / per_step), 1)

    def _sequences(
        self, split: LeaveOneOutSplit | TemporalSplit
    ) -> tuple[UserSequences, UserSequences]:
        """(training windows' sequences, validation sequences ending in the validation target)."""
        train = split.train
        bounds = train.user_bounds()
        lengths = np.diff(bounds)
        columns = np.zeros((1 + FEATURE_ROWS, len(train)), dtype=np.int64)
        columns[0] = train.item
        columns[1] = NEUTRAL_ACTION
        if self.features is not None:
            for u in np.flatnonzero(lengths):
                rows = slice(bounds[u], bounds[u + 1])
                columns[1:, rows] = self.features.prefix(int(u), int(lengths[u]), train.item[rows])
        users = np.flatnonzero(lengths)
        offsets = np.r_[0, np.cumsum(lengths[users])].astype(np.int64)
        rows = np.concatenate([np.arange(bounds[u], bounds[u + 1]) for u in users])
        train_seqs = UserSequences(
            [str(u) for u in users], offsets, columns[:, rows], train.ts[rows].astype(np.int64)
        )
        if isinstance(split, LeaveOneOutSplit):
            return train_seqs, self._with_targets(split.validation)
        # A temporal split has no validation targets: hold out each member's last training token.
        return split_last_token(train_seqs)

    def _with_targets(self, eval_set: EvalSet) -> UserSequences:
        """Each evaluated history with its (first) target appended: LastTokenDataset's input.

        Every token carries the target's time: the loss reads times only at the target (its
        freshness), and an eval set keeps no times for the history's own tokens.
        """
        pieces, lengths, times = [], [], []
        for i, history in enumerate(eval_set.histories):
            tokens = np.zeros((1 + FEATURE_ROWS, len(history) + 1), dtype=np.int64)
            tokens[0, :-1] = history
            tokens[0, -1] = eval_set.targets[i, 0]
            tokens[1:, :-1] = self._features_for(eval_set, i)
            tokens[1, -1] = NEUTRAL_ACTION  # the target's own features are never inputs
            pieces.append(tokens)
            lengths.append(tokens.shape[1])
            times.append(np.full(tokens.shape[1], eval_set.target_ts[i, 0], dtype=np.int64))
        offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
        users = [str(u) for u in eval_set.users]
        return UserSequences(users, offsets, np.concatenate(pieces, axis=1), np.concatenate(times))

    def _features_for(self, eval_set: EvalSet, i: int) -> np.ndarray:
        history = eval_set.histories[i]
        if self.features is None:
            neutral = np.zeros((FEATURE_ROWS, len(history)), dtype=np.int64)
            neutral[0] = NEUTRAL_ACTION
            return neutral
        # exclude[i] is the member's whole prefix before the targets; history is its tail.
        return self.features.prefix(int(eval_set.users[i]), len(eval_set.exclude[i]), history)

    def _remember_histories(self, split: LeaveOneOutSplit | TemporalSplit) -> None:
        if self.features is None:
            return
        eval_sets = [split.test]
        if isinstance(split, LeaveOneOutSplit):
            eval_sets.append(split.validation)
        for eval_set in eval_sets:
            for i, history in enumerate(eval_set.histories):
                key = history.astype(np.int64).tobytes()
                found = self._features_for(eval_set, i)
                known = self._history_features.get(key, found)
                # Two members with the same titles but other features: refuse to guess later.
                same = known is not None and np.array_equal(known, found)
                self._history_features[key] = found if same else None

    # -------------------------------------------------------------------------------- score

    def score(self, histories: list[np.ndarray]) -> np.ndarray:
        """Scores without a request time, so without the model's freshness bias."""
        return self._scores(self._batch(histories), None)

    def score_members(
        self,
        users: np.ndarray,
        histories: list[np.ndarray],
        seen: list[np.ndarray],
        at_ts: np.ndarray,
    ) -> np.ndarray:
        """Scores at each member's decision time ``at_ts`` (the freshness bias), with that
        member's own token features (``TokenFeatures.prefix``: no guessing by titles)."""
        if self.features is None:
            batch = self._batch(histories)
        else:
            batch = self._member_batch(users, histories, seen)
        return self._scores(batch, torch.from_numpy(np.asarray(at_ts, dtype=np.int64)))

    def _scores(self, batch: SequenceBatch, request_times: torch.Tensor | None) -> np.ndarray:
        if self.model is None or self._item_to_title is None:
            raise RuntimeError("call fit before score")
        model = self.model
        with torch.no_grad():
            window = batch.latest(model.config.max_len)  # (B, W)
            titles = model.title_embeddings()  # (N, D)
            hidden = model.hidden_states(window, titles)  # (B, W, D)
            last = hidden[torch.arange(len(window)), window.lengths - 1]  # (B, D)
            scores = model.title_logits(last, titles, request_times)  # (B, N)
        return scores[:, torch.from_numpy(self._item_to_title)].numpy()  # (B, n_items)

    def _member_batch(
        self, users: np.ndarray, histories: list[np.ndarray], seen: list[np.ndarray]
    ) -> SequenceBatch:
        if any(len(h) == 0 for h in histories):
            raise ValueError(f"{self.name} cannot score an empty history")
        width = max(len(h) for h in histories)
        tokens = np.zeros((1 + FEATURE_ROWS, len(histories), width), dtype=np.int64)
        tokens[0] = -1  # PAD_INDEX
        for b, (user, history, prefix) in enumerate(
            zip(users.tolist(), histories, seen, strict=True)
        ):
            tokens[0, b, : len(history)] = self._item_to_title[history]
            tokens[1:, b, : len(history)] = self.features.prefix(user, len(prefix), history)
        return SequenceBatch(*torch.from_numpy(tokens).unbind(0))

    def _batch(self, histories: Sequence[np.ndarray]) -> SequenceBatch:
        if any(len(h) == 0 for h in histories):
            raise ValueError(f"{self.name} cannot score an empty history")
        width = max(len(h) for h in histories)
        tokens = np.zeros((1 + FEATURE_ROWS, len(histories), width), dtype=np.int64)
        tokens[0] = -1  # PAD_INDEX
        for b, history in enumerate(histories):
            L = len(history)
            tokens[0, b, :L] = self._item_to_title[history]
            tokens[1:, b, :L] = self._lookup(history)
        return SequenceBatch(*torch.from_numpy(tokens).unbind(0))

    def _lookup(self, history: np.ndarray) -> np.ndarray:
        if self.features is None:
            neutral = np.zeros((FEATURE_ROWS, len(history)), dtype=np.int64)
            neutral[0] = NEUTRAL_ACTION
            return neutral
        key = np.asarray(history, dtype=np.int64).tobytes()
        if key not in self._history_features:
            raise KeyError(
                f"{self.name} was not fitted on a split holding this history, so its token "
                "features are unknown; fit on the split whose histories you score"
            )
        found = self._history_features[key]
        if found is None:
            raise ValueError(
                "two members share this history's titles with different token features; "
                "score them with per-member features (not supported by the Recommender protocol)"
            )
        return found
