"""From ``gold/interaction_tokens`` rows to model windows: sequences, splits, datasets, collate.

A member's whole history is cut into sliding windows of ``max_len`` inputs (each input's target
is the next token), starting every ``window_stride`` tokens and always including the newest
tokens, so every transition of the history is trained on. Overlapping windows train the
overlapped transitions more than once, with different context lengths; a stride equal to the
window removes the overlap. The held-out split keeps each member's last token as the
validation target, predicted from the tokens before it. Token times (unix seconds) travel beside
the tokens when known, so each target carries the moment it was chosen: the model's freshness
bias reads a title's age at that moment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from pipelines.models.batches import PAD_INDEX, SequenceBatch
from pipelines.schemas import ACTIONS, DEVICES

FEATURE_COLUMNS: tuple[str, ...] = (
    "title",
    "action",
    "watch_fraction",
    "gap",
    "device",
    "hour",
    "weekday",
)
"""Row order of ``TokenWindow.tokens``; the same as ``SequenceBatch``'s columns."""


@dataclass(frozen=True)
class UserSequences:
    """Every member's tokens, position-ordered and concatenated (one array per column).

    Member u owns rows ``offsets[u]:offsets[u + 1]`` of ``tokens`` (and of ``times``).
    """

    user_ids: list[str]  # (U,) member ids, in offsets order
    offsets: np.ndarray  # (U + 1,) int64: row ranges per member
    tokens: np.ndarray  # (7, N) int64: FEATURE_COLUMNS x tokens (title = title index)
    times: np.ndarray | None = None  # (N,) int64 unix seconds of each token; None: unknown

    def __post_init__(self) -> None:
        if self.times is not None and self.times.shape != (self.tokens.shape[1],):
            raise ValueError(
                f"times must be ({self.tokens.shape[1]},) like the tokens, got {self.times.shape}"
            )

    def __len__(self) -> int:
        return len(self.user_ids)

    @property
    def lengths(self) -> np.ndarray:
        """(U,) int64 tokens per member."""
        return np.diff(self.offsets)

    def member(self, u: int) -> np.ndarray:
        """(7, L) member u's tokens."""
        return self.tokens[:, self.offsets[u] : self.offsets[u + 1]]

    def member_times(self, u: int) -> np.ndarray | None:
        """(L,) member u's token times, or None when the sequences carry none."""
        if self.times is None:
            return None
        return self.times[self.offsets[u] : self.offsets[u + 1]]


def build_sequences(tokens: pd.DataFrame, title_index: Mapping[str, int]) -> UserSequences:
    """Per-member sequences from an ``INTERACTION_TOKENS`` frame, ordered by ``position``.

    ``title_index`` maps ``title_id`` to the model's title index (tokenizer id - 64). A title,
    action or device outside the vocabulary is an error: the tokenizer or enums are stale. The
    ``ts`` column, when the frame has one, becomes the sequences' ``times``.
    """
    frame = tokens.sort_values(["user_id", "position"], kind="stable")
    if frame.duplicated(["user_id", "position"]).any():
        raise ValueError("a member has two tokens at one position; positions must be unique")
    titles = frame["title_id"].map(title_index)
    if titles.isna().any():
        unknown = frame.loc[titles.isna(), "title_id"].unique()[:5].tolist()
        raise ValueError(f"titles missing from the tokenizer, e.g. {unknown}: extend it first")
    actions = frame["action"].map({a: i for i, a in enumerate(ACTIONS)})
    if actions.isna().any():
        raise ValueError(
            f"actions outside schemas.ACTIONS: {frame['action'][actions.isna()].unique()}"
        )
    # The contract allows a null device; it means the same as "unknown".
    devices = frame["device"].fillna("unknown").map({d: i for i, d in enumerate(DEVICES)})
    if devices.isna().any():
        raise ValueError(
            f"devices outside schemas.DEVICES: {frame['device'][devices.isna()].unique()}"
        )
    matrix = np.stack(
        [
            titles.to_numpy(np.int64),
            actions.to_numpy(np.int64),
            frame["watch_fraction_bucket"].to_numpy(np.int64),
            frame["gap_bucket"].to_numpy(np.int64),
            devices.to_numpy(np.int64),
            frame["hour"].to_numpy(np.int64),
            frame["weekday"].to_numpy(np.int64),
        ]
    )  # (7, N)
    users = frame["user_id"].to_numpy()
    starts = (
        np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.array([], int)
    )
    offsets = np.r_[starts, len(users)].astype(np.int64)
    times = unix_seconds(frame["ts"]) if "ts" in frame.columns else None
    return UserSequences([str(u) for u in users[starts]], offsets, matrix, times)


def unix_seconds(ts: pd.Series) -> np.ndarray:
    """(N,) int64 unix seconds of a timestamp column (naive values are UTC, as Spark writes)."""
    values = pd.to_datetime(ts)
    if values.dt.tz is None:
        values = values.dt.tz_localize("UTC")
    return ((values - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(np.int64)


def split_last_token(sequences: UserSequences) -> tuple[UserSequences, UserSequences]:
    """(train, validation): train drops each member's last token; validation keeps it as target.

    Members with fewer than two tokens have no transition to train or validate and are left
    out of both.
    """
    keep = np.flatnonzero(sequences.lengths >= 2)
    validation = _select(sequences, keep)
    ends = validation.offsets[1:] - 1  # (U,) row of each member's last token
    train_tokens = np.delete(validation.tokens, ends, axis=1)
    train_times = None if validation.times is None else np.delete(validation.times, ends)
    train_offsets = validation.offsets - np.arange(len(keep) + 1)
    train = UserSequences(validation.user_ids, train_offsets, train_tokens, train_times)
    return train, validation


def _select(sequences: UserSequences, members: np.ndarray) -> UserSequences:
    spans = [np.arange(sequences.offsets[u], sequences.offsets[u + 1]) for u in members]
    rows = np.concatenate(spans) if spans else np.array([], dtype=np.int64)
    lengths = sequences.lengths[members]
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    return UserSequences(
        [sequences.user_ids[u] for u in members],
        offsets,
        sequences.tokens[:, rows],
        None if sequences.times is None else sequences.times[rows],
    )


@dataclass(frozen=True)
class TokenWindow:
    """One training example before padding: T inputs and the title that follows each."""

    tokens: np.ndarray  # (7, T) int64: FEATURE_COLUMNS x inputs
    targets: np.ndarray  # (T,) int64: next title index per input, PAD_INDEX for none
    times: np.ndarray | None = None  # (T,) int64 unix seconds of each input; None: unknown
    target_times: np.ndarray | None = None  # (T,) int64 unix seconds of each target, 0 for none


class WindowDataset(Dataset[TokenWindow]):
    """Sliding windows of ``window`` inputs every ``stride`` tokens over each whole history.

    The last window of a member always ends at the newest token, so no transition is dropped.
    """

    def __init__(self, sequences: UserSequences, window: int, stride: int) -> None:
        if not 0 < stride <= window:
            raise ValueError(f"stride must be in 1..window, got stride={stride} window={window}")
        self.sequences = sequences
        self.window = window
        index: list[tuple[int, int]] = []
        for u, length in enumerate(sequences.lengths):
            if length < 2:
                continue
            last_start = max(int(length) - 1 - window, 0)
            starts = list(range(0, last_start + 1, stride))
            if starts[-1] != last_start:
                starts.append(last_start)
            index.extend((u, s) for s in starts)
        self.index = np.array(index, dtype=np.int64).reshape(-1, 2)  # (num_windows, 2)
        starts = self.index[:, 1]
        ends = np.minimum(starts + window, sequences.lengths[self.index[:, 0]] - 1)
        self.lengths = ends - starts  # (num_windows,) inputs of each window, for batching

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> TokenWindow:
        u, start = self.index[i]
        member = self.sequences.member(int(u))  # (7, L)
        times = self.sequences.member_times(int(u))  # (L,) or None
        end = min(start + self.window, member.shape[1] - 1)
        return TokenWindow(
            member[:, start:end],
            member[0, start + 1 : end + 1].copy(),
            None if times is None else times[start:end],
            None if times is None else times[start + 1 : end + 1],
        )


class LastTokenDataset(Dataset[TokenWindow]):
    """Per member: the ``window`` tokens before the last, with only the last as target."""

    def __init__(self, sequences: UserSequences, window: int) -> None:
        self.sequences = sequences
        self.window = window
        self.members = np.flatnonzero(sequences.lengths >= 2)

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, i: int) -> TokenWindow:
        member = self.sequences.member(int(self.members[i]))  # (7, L)
        times = self.sequences.member_times(int(self.members[i]))  # (L,) or None
        start = max(member.shape[1] - 1 - self.window, 0)
        history = member[:, start:-1]  # (7, T)
        targets = np.full(history.shape[1], PAD_INDEX, dtype=np.int64)
        targets[-1] = member[0, -1]
        if times is None:
            return TokenWindow(history, targets)
        target_times = np.zeros(history.shape[1], dtype=np.int64)
        target_times[-1] = times[-1]
        return TokenWindow(history, targets, times[start:-1], target_times)


def collate_windows(examples: Sequence[TokenWindow]) -> SequenceBatch:
    """Right-pad examples to the longest one: titles/targets with PAD_INDEX, features and times
    with 0. Times are kept when every example has them."""
    width = max(example.targets.shape[0] for example in examples)
    tokens = np.zeros((len(FEATURE_COLUMNS), len(examples), width), dtype=np.int64)
    tokens[0] = PAD_INDEX
    targets = np.full((len(examples), width), PAD_INDEX, dtype=np.int64)
    timed = all(e.times is not None and e.target_times is not None for e in examples)
    times = np.zeros((2, len(examples), width), dtype=np.int64)  # inputs, targets
    for b, example in enumerate(examples):
        T = example.targets.shape[0]
        tokens[:, b, :T] = example.tokens
        targets[b, :T] = example.targets
        if timed:
            times[0, b, :T] = example.times
            times[1, b, :T] = example.target_times
    columns = torch.from_numpy(tokens)  # (7, B, T)
    return SequenceBatch(
        *columns.unbind(0),
        targets=torch.from_numpy(targets),
        times=torch.from_numpy(times[0]) if timed else None,
        target_times=torch.from_numpy(times[1]) if timed else None,
    )


def history_batch(sequences: UserSequences, members: Sequence[int]) -> SequenceBatch:
    """The whole histories of ``members`` as one right-padded batch (for ``recommend``)."""
    examples = [
        TokenWindow(
            sequences.member(u),
            np.zeros(sequences.lengths[u], dtype=np.int64),
            sequences.member_times(u),
            np.zeros(sequences.lengths[u], dtype=np.int64),
        )
        for u in members
    ]
    return replace(collate_windows(examples), targets=None, target_times=None)
