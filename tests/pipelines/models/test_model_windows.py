"""Token rows to windows: ordering, the last-token split, window coverage, padding, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipelines.models.batches import PAD_INDEX
from pipelines.models.windows import (
    LastTokenDataset,
    WindowDataset,
    build_sequences,
    collate_windows,
    history_batch,
    split_last_token,
)
from pipelines.schemas import ACTIONS, DEVICES


def token_rows(lengths: dict[str, int]) -> pd.DataFrame:
    """An INTERACTION_TOKENS-shaped frame; title of token p of user u is f"t{p}" (shuffled)."""
    rows = [
        {
            "user_id": user,
            "position": p,
            "title_id": f"t{p}",
            "action": ACTIONS[p % len(ACTIONS)],
            "watch_fraction_bucket": p % 6,
            "gap_bucket": p % 16,
            "device": None if p % 5 == 0 else DEVICES[p % len(DEVICES)],
            "hour": p % 24,
            "weekday": p % 7,
            "ts": pd.Timestamp("2026-01-01") + pd.Timedelta(hours=p),
        }
        for user, length in lengths.items()
        for p in range(length)
    ]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0)


TITLE_INDEX = {f"t{p}": p for p in range(100)}


def test_sequences_are_position_ordered_per_member_with_enum_ids() -> None:
    sequences = build_sequences(token_rows({"a": 5, "b": 3}), TITLE_INDEX)
    assert sequences.user_ids == ["a", "b"]
    assert sequences.lengths.tolist() == [5, 3]
    a = sequences.member(0)
    assert a[0].tolist() == [0, 1, 2, 3, 4]  # titles in position order
    assert a[1].tolist() == [p % len(ACTIONS) for p in range(5)]
    assert a[4, 0] == DEVICES.index("unknown")  # a null device means "unknown"


def test_unknown_titles_and_duplicate_positions_fail_loudly() -> None:
    with pytest.raises(ValueError, match="extend it"):
        build_sequences(token_rows({"a": 5}), {"t0": 0})
    rows = token_rows({"a": 3})
    with pytest.raises(ValueError, match="positions must be unique"):
        build_sequences(pd.concat([rows, rows.iloc[:1]]), TITLE_INDEX)


def test_split_holds_out_each_members_last_token() -> None:
    sequences = build_sequences(token_rows({"a": 6, "b": 1, "c": 3}), TITLE_INDEX)
    train, validation = split_last_token(sequences)
    assert train.user_ids == validation.user_ids == ["a", "c"]  # b has no transition
    assert train.lengths.tolist() == [5, 2]
    examples = LastTokenDataset(validation, window=3)
    last = examples[0]
    assert last.tokens[0].tolist() == [2, 3, 4]  # the 3 tokens before the held-out one
    assert last.targets.tolist() == [PAD_INDEX, PAD_INDEX, 5]


@pytest.mark.parametrize(("length", "window", "stride"), [(40, 8, 8), (40, 8, 3), (5, 8, 4)])
def test_windows_cover_every_transition_of_the_history(
    length: int, window: int, stride: int
) -> None:
    sequences = build_sequences(token_rows({"a": length}), TITLE_INDEX)
    dataset = WindowDataset(sequences, window=window, stride=stride)
    covered = set()
    for i in range(len(dataset)):
        example = dataset[i]
        inputs, targets = example.tokens[0], example.targets
        assert len(inputs) <= window
        assert (targets == inputs + 1).all()  # each target is the next token
        covered |= set(inputs.tolist())
    assert covered == set(range(length - 1))
    assert dataset[len(dataset) - 1].targets[-1] == length - 1  # the newest token is a target


def test_collate_right_pads_with_the_documented_padding() -> None:
    sequences = build_sequences(token_rows({"a": 10, "b": 4}), TITLE_INDEX)
    dataset = WindowDataset(sequences, window=8, stride=8)
    batch = collate_windows([dataset[i] for i in range(len(dataset))])
    assert batch.titles.dtype == torch.int64
    assert batch.lengths.tolist() == [8, 8, 3]  # the last window of "a" ends at its newest token
    assert (batch.titles[~batch.mask] == PAD_INDEX).all()
    assert (batch.targets[~batch.mask] == PAD_INDEX).all()
    assert (batch.actions[~batch.mask] == 0).all()
    histories = history_batch(sequences, [0, 1])
    assert histories.targets is None
    assert histories.lengths.tolist() == [10, 4]
    assert np.array_equal(histories.titles[1, :4].numpy(), np.arange(4))


def test_token_times_travel_with_the_tokens_and_each_target_carries_its_own() -> None:
    hour, start = 3600, int(pd.Timestamp("2026-01-01", tz="UTC").timestamp())
    sequences = build_sequences(token_rows({"a": 7, "b": 3}), TITLE_INDEX)
    assert sequences.member_times(0).tolist() == [start + p * hour for p in range(7)]
    train, validation = split_last_token(sequences)
    assert train.member_times(0).tolist() == [start + p * hour for p in range(6)]
    windows = WindowDataset(train, window=3, stride=3)
    for i in range(len(windows)):
        window = windows[i]
        # Token p's time is start + p hours, and the target of input p is token p + 1.
        assert (window.times - start).tolist() == [hour * p for p in window.tokens[0]]
        assert (window.target_times - start).tolist() == [hour * t for t in window.targets]
    batch = collate_windows([windows[i] for i in range(len(windows))])
    assert batch.times is not None and batch.target_times is not None
    assert torch.equal(batch.target_times == 0, batch.targets == PAD_INDEX)
    last = LastTokenDataset(validation, window=4)[0]
    assert last.target_times.tolist() == [0, 0, 0, start + 6 * hour]
    history = history_batch(sequences, [0, 1])
    assert history.target_times is None
    assert (history.last_times - start).tolist() == [6 * hour, 2 * hour]
    assert (history.latest(2).last_times - start).tolist() == [6 * hour, 2 * hour]
