"""Held-out splits of per-user chronological histories: leave-one-out and temporal.

Leave-one-out full ranking is the protocol of SASRec, BERT4Rec and HSTU: each user's last
interaction is the test target, the second-to-last the validation target, the rest trains the
model, and every item of the catalogue is ranked (no sampled negatives). The temporal split is
the production question instead: train on everything strictly before a cut-off and predict each
user's next titles after it, which also measures titles released after the cut-off (cold start).

Both splits share one integer item index (``0..n_items-1``, items sorted by their original id)
covering every item in the data and, optionally, a catalogue, so a title first seen after the
cut-off still has an index to be ranked at. Histories are ordered by timestamp, then by input
order for equal timestamps (MovieLens has many same-second ratings; input order keeps the split
deterministic).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

NO_TARGET = -1
"""Pads ``EvalSet.targets`` for users with fewer than ``k`` targets."""


@dataclass(frozen=True)
class Interactions:
    """Interactions in index space, sorted by (user, ts, input order)."""

    user: np.ndarray  # (N,) int64 user index 0..n_users-1
    item: np.ndarray  # (N,) int64 item index 0..n_items-1
    ts: np.ndarray  # (N,) int64 unix seconds
    user_ids: np.ndarray  # (n_users,) object: original user id of each user index
    item_ids: np.ndarray  # (n_items,) object: original item id of each item index

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def __len__(self) -> int:
        return len(self.user)

    def subset(self, keep: np.ndarray) -> Interactions:
        """The rows where ``keep`` (a ``(N,)`` bool mask) holds, in the same index space."""
        return replace(self, user=self.user[keep], item=self.item[keep], ts=self.ts[keep])

    def user_bounds(self) -> np.ndarray:
        """``(n_users + 1,)`` offsets: user ``u``'s rows are ``bounds[u]:bounds[u + 1]``."""
        return np.searchsorted(self.user, np.arange(self.n_users + 1), side="left")


@dataclass(frozen=True)
class EvalSet:
    """Users to score, what each has seen, and the items they went on to interact with."""

    users: np.ndarray  # (U,) int64 user index
    histories: list[np.ndarray]  # U arrays (L_u <= max_history,) int64, oldest first: model input
    exclude: list[np.ndarray]  # U arrays int64: every item seen before the targets (not ranked)
    targets: np.ndarray  # (U, k) int64 item index, NO_TARGET where a user has fewer than k
    target_ts: np.ndarray  # (U, k) int64 unix seconds of each target (0 where NO_TARGET)
    n_items: int  # size of the ranked catalogue

    def __post_init__(self) -> None:
        n = len(self.users)
        if not (len(self.histories) == len(self.exclude) == len(self.targets) == n):
            raise ValueError("EvalSet fields must all have one entry per user")
        if self.targets.ndim != 2 or self.target_ts.shape != self.targets.shape:
            raise ValueError("EvalSet.targets and target_ts must both be (U, k)")

    def __len__(self) -> int:
        return len(self.users)

    @property
    def n_cases(self) -> int:
        """(user, target) pairs to rank."""
        return int((self.targets != NO_TARGET).sum())

    def take(self, rows: np.ndarray) -> EvalSet:
        """The users at positions ``rows`` (e.g. a sample for a quick evaluation)."""
        return EvalSet(
            users=self.users[rows],
            histories=[self.histories[i] for i in rows],
            exclude=[self.exclude[i] for i in rows],
            targets=self.targets[rows],
            target_ts=self.target_ts[rows],
            n_items=self.n_items,
        )


@dataclass(frozen=True)
class LeaveOneOutConfig:
    """How leave-one-out cuts each history."""

    max_history: int = 200  # most recent items a model sees at prediction time
    min_interactions: int = 3  # users with fewer keep all their interactions for training only


@dataclass(frozen=True)
class LeaveOneOutSplit:
    """Last item = test target, second-to-last = validation target, the rest = training."""

    train: Interactions  # every interaction except the held-out last two of evaluated users
    validation: EvalSet  # history = training items, target = second-to-last item
    test: EvalSet  # history = training items + the validation item, target = last item
    config: LeaveOneOutConfig

    @property
    def n_items(self) -> int:
        return self.train.n_items


@dataclass(frozen=True)
class TemporalConfig:
    """Where the temporal split cuts and how many future titles it keeps per user."""

    cutoff_ts: int  # unix seconds; training is every interaction with ts < cutoff_ts
    targets_per_user: int = 1  # first k distinct items each user interacts with at/after cutoff
    max_history: int = 200  # most recent items a model sees at prediction time
    min_history: int = 1  # users with fewer interactions before the cut-off are not evaluated


@dataclass(frozen=True)
class TemporalSplit:
    """Train before a cut-off; targets are each user's next titles at or after it."""

    train: Interactions  # interactions with ts < cutoff_ts
    test: EvalSet  # history = a user's training items, targets = first k items after cut-off
    new_items: np.ndarray  # (n_items,) bool: released after the cut-off (cold-start titles)
    item_release_ts: np.ndarray  # (n_items,) float64 unix seconds of release, NaN when unknown
    config: TemporalConfig

    @property
    def n_items(self) -> int:
        return self.train.n_items


def index_interactions(
    frame: pd.DataFrame,
    user_col: str = "user_id",
    item_col: str = "title_id",
    ts_col: str = "ts",
    catalogue: Iterable[str] | None = None,
) -> Interactions:
    """Map ids onto dense indices and sort by (user, ts, input order).

    Items are indexed in sorted order of their string id over the union of ``frame`` and
    ``catalogue`` (titles nobody has interacted with yet are still ranked). Users are indexed
    in sorted order of their string id. ``ts_col`` holds unix seconds or a datetime column.
    """
    missing = {user_col, item_col, ts_col} - set(frame.columns)
    if missing:
        raise ValueError(f"interactions frame lacks columns {sorted(missing)}")
    if frame[[user_col, item_col, ts_col]].isna().any().any():
        raise ValueError("interactions must not have missing user, item or timestamp")
    # Fixed-width unicode arrays sort and search far faster than object arrays of str.
    users = frame[user_col].astype(str).to_numpy(dtype=str)
    items = frame[item_col].astype(str).to_numpy(dtype=str)
    ts_values = frame[ts_col]
    if pd.api.types.is_datetime64_any_dtype(ts_values):
        # Gold tokens carry timestamps; everything here counts in unix seconds.
        ts_values = (ts_values - pd.Timestamp(0, tz=ts_values.dt.tz)) // pd.Timedelta(seconds=1)
    ts = ts_values.to_numpy().astype(np.int64)

    item_vocab = np.unique(items) if catalogue is None else np.union1d(items, list(catalogue))
    user_ids, user_index = np.unique(users, return_inverse=True)
    item_index = np.searchsorted(item_vocab, items)
    # The last key is the primary one; the arange keeps input order for equal timestamps.
    order = np.lexsort((np.arange(len(ts)), ts, user_index))
    return Interactions(
        user=user_index[order].astype(np.int64),
        item=item_index[order].astype(np.int64),
        ts=ts[order],
        user_ids=user_ids.astype(object),
        item_ids=item_vocab.astype(object),
    )


def leave_one_out_split(
    interactions: Interactions, config: LeaveOneOutConfig = LeaveOneOutConfig()
) -> LeaveOneOutSplit:
    """Hold out each user's last two interactions (validation, then test).

    Users with fewer than ``config.min_interactions`` interactions are not evaluated; all their
    interactions stay in training, where they still teach item co-occurrence. The test history
    includes the validation item, as in SASRec: at test time the model knows everything but the
    last interaction. Seen items to exclude from ranking are the whole history, not only the
    ``max_history`` most recent items the model is shown.
    """
    if config.min_interactions < 3:
        raise ValueError("leave-one-out needs min_interactions >= 3 (train, validation, test)")
    bounds = interactions.user_bounds()
    counts = np.diff(bounds)
    evaluated = np.flatnonzero(counts >= config.min_interactions)
    last = bounds[evaluated + 1] - 1  # row of each evaluated user's test target
    held_out = np.zeros(len(interactions), dtype=bool)
    held_out[last] = True
    held_out[last - 1] = True

    item, ts = interactions.item, interactions.ts
    val_hist, test_hist = [], []
    for start, end in zip(bounds[evaluated], last, strict=True):
        val_hist.append(item[start : end - 1])
        test_hist.append(item[start:end])

    def eval_set(full: list[np.ndarray], target_rows: np.ndarray) -> EvalSet:
        return EvalSet(
            users=evaluated.astype(np.int64),
            histories=[h[-config.max_history :] for h in full],
            exclude=full,
            targets=item[target_rows][:, None],
            target_ts=ts[target_rows][:, None],
            n_items=interactions.n_items,
        )

    return LeaveOneOutSplit(
        train=interactions.subset(~held_out),
        validation=eval_set(val_hist, last - 1),
        test=eval_set(test_hist, last),
        config=config,
    )


def merge_validation_into_train(split: LeaveOneOutSplit) -> LeaveOneOutSplit:
    """``split`` with each validation target moved into ``train``: what a model refits on before
    the test step, once its hyperparameters are chosen on validation.

    The test target is still held out, so the refit model knows exactly what the test history
    holds (everything but the last interaction). ``validation`` is left as it was but is no
    longer held out; never tune on it after refitting.
    """
    train, targets = split.train, split.validation
    rows = pd.DataFrame(
        {
            "user": np.concatenate([train.user, targets.users]),
            "item": np.concatenate([train.item, targets.targets[:, 0]]),
            "ts": np.concatenate([train.ts, targets.target_ts[:, 0]]),
            # Validation targets come last for their user in input order as well as in time.
            "order": np.arange(len(train) + len(targets)),
        }
    ).sort_values(["user", "ts", "order"], kind="stable")
    merged = replace(
        train,
        user=rows["user"].to_numpy(np.int64),
        item=rows["item"].to_numpy(np.int64),
        ts=rows["ts"].to_numpy(np.int64),
    )
    return replace(split, train=merged)


def temporal_split(
    interactions: Interactions,
    config: TemporalConfig,
    release_ts: Mapping[str, float] | None = None,
) -> TemporalSplit:
    """Train strictly before ``config.cutoff_ts``; targets are each user's next distinct items.

    A target already in the user's history (a re-watch) is skipped, because seen items are not
    ranked; MovieLens never has one. "New titles" are those released at or after the cut-off
    according to ``release_ts`` (original item id -> unix seconds); without it, a title is new
    when nobody interacted with it before the cut-off, the only release signal the events carry.
    """
    k = config.targets_per_user
    if k < 1:
        raise ValueError("targets_per_user must be at least 1")
    before = interactions.ts < config.cutoff_ts
    train = interactions.subset(before)
    bounds = interactions.user_bounds()

    users, histories, excludes, targets, target_ts = [], [], [], [], []
    for u in range(interactions.n_users):
        start, end = bounds[u], bounds[u + 1]
        # Rows are sorted by ts within a user, so the cut is one searchsorted.
        cut = start + np.searchsorted(interactions.ts[start:end], config.cutoff_ts, side="left")
        history = interactions.item[start:cut]
        if len(history) < config.min_history or cut == end:
            continue
        seen = set(history.tolist())
        chosen_items, chosen_ts = [], []
        for row in range(cut, end):
            candidate = int(interactions.item[row])
            if candidate in seen:
                continue
            seen.add(candidate)
            chosen_items.append(candidate)
            chosen_ts.append(int(interactions.ts[row]))
            if len(chosen_items) == k:
                break
        if not chosen_items:
            continue
        pad = k - len(chosen_items)
        users.append(u)
        histories.append(history[-config.max_history :])
        excludes.append(history)
        targets.append(chosen_items + [NO_TARGET] * pad)
        target_ts.append(chosen_ts + [0] * pad)

    n_items = interactions.n_items
    item_release = np.full(n_items, np.nan)
    if release_ts is not None:
        vocab = interactions.item_ids.astype(str)
        positions = np.searchsorted(vocab, np.asarray(list(release_ts), dtype=str))
        for position, (item_id, value) in zip(positions, release_ts.items(), strict=True):
            if position < n_items and vocab[position] == item_id:
                item_release[position] = np.nan if value is None else float(value)
        new_items = item_release >= config.cutoff_ts
    else:
        new_items = np.ones(n_items, dtype=bool)
        new_items[train.item] = False

    test = EvalSet(
        users=np.asarray(users, dtype=np.int64),
        histories=histories,
        exclude=excludes,
        targets=np.asarray(targets, dtype=np.int64).reshape(len(users), k),
        target_ts=np.asarray(target_ts, dtype=np.int64).reshape(len(users), k),
        n_items=n_items,
    )
    return TemporalSplit(
        train=train, test=test, new_items=new_items, item_release_ts=item_release, config=config
    )
