"""Leave-one-out and temporal splits on hand-built histories, with exact expected targets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.evaluation.splits import (
    NO_TARGET,
    LeaveOneOutConfig,
    TemporalConfig,
    index_interactions,
    leave_one_out_split,
    merge_validation_into_train,
    temporal_split,
)


def _frame(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "title_id", "ts"])


# Items are indexed in sorted id order: a=0, b=1, c=2, d=3, e=4.
ROWS = [
    ("u1", "c", 30),
    ("u1", "a", 10),
    ("u2", "a", 5),
    ("u1", "b", 20),
    ("u1", "e", 20),  # same second as b, later in the file: comes after b
    ("u2", "b", 6),  # u2 has 2 interactions: training only
    ("u3", "d", 1),
    ("u3", "a", 2),
    ("u3", "c", 3),
]


def test_index_sorts_by_time_then_input_order_and_keeps_catalogue_titles():
    interactions = index_interactions(_frame(ROWS), catalogue=["z"])
    assert list(interactions.item_ids) == ["a", "b", "c", "d", "e", "z"]
    assert list(interactions.user_ids) == ["u1", "u2", "u3"]
    u1 = interactions.item[interactions.user == 0]
    assert u1.tolist() == [0, 1, 4, 2]  # a@10, b@20, e@20, c@30
    assert interactions.n_items == 6


def test_leave_one_out_targets_are_exact():
    split = leave_one_out_split(index_interactions(_frame(ROWS)))
    assert split.test.users.tolist() == [0, 2]  # u2 (2 interactions) is not evaluated
    assert split.test.targets[:, 0].tolist() == [2, 2]  # u1 -> c, u3 -> c
    assert split.validation.targets[:, 0].tolist() == [4, 0]  # u1 -> e, u3 -> a
    assert split.test.target_ts[:, 0].tolist() == [30, 3]
    assert [h.tolist() for h in split.validation.histories] == [[0, 1], [3]]
    assert [h.tolist() for h in split.test.histories] == [[0, 1, 4], [3, 0]]
    # Training keeps u2 whole and the first items of the others.
    train_pairs = sorted(zip(split.train.user.tolist(), split.train.item.tolist(), strict=True))
    assert train_pairs == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 3)]


def test_leave_one_out_caps_the_model_input_but_excludes_the_whole_history():
    rows = [("u", f"i{n:03d}", n) for n in range(12)]
    split = leave_one_out_split(index_interactions(_frame(rows)), LeaveOneOutConfig(max_history=4))
    assert split.test.histories[0].tolist() == [7, 8, 9, 10]
    assert split.test.exclude[0].tolist() == list(range(11))
    assert split.test.targets.tolist() == [[11]]


def test_leave_one_out_rejects_fewer_than_three_interactions():
    with pytest.raises(ValueError, match="min_interactions"):
        leave_one_out_split(index_interactions(_frame(ROWS)), LeaveOneOutConfig(min_interactions=2))


def test_merging_validation_moves_validation_targets_into_training():
    split = leave_one_out_split(index_interactions(_frame(ROWS)))
    refit = merge_validation_into_train(split)
    u1 = refit.train.item[refit.train.user == 0]
    assert u1.tolist() == [0, 1, 4]  # a, b, then the validation target e; never the test target c
    assert len(refit.train) == len(split.train) + 2
    assert refit.test is split.test


def test_temporal_split_takes_the_next_distinct_titles_after_the_cutoff():
    rows = [
        ("u1", "a", 1),
        ("u1", "b", 2),
        ("u1", "a", 10),  # a re-watch after the cut-off: not a target
        ("u1", "c", 11),
        ("u1", "d", 12),
        ("u1", "e", 13),  # beyond k = 2
        ("u2", "c", 15),  # no history before the cut-off: not evaluated
        ("u3", "b", 3),
        ("u3", "d", 20),
    ]
    interactions = index_interactions(_frame(rows))
    split = temporal_split(interactions, TemporalConfig(cutoff_ts=10, targets_per_user=2))
    assert split.test.users.tolist() == [0, 2]
    assert split.test.targets.tolist() == [[2, 3], [3, NO_TARGET]]  # u1: c, d; u3: d
    assert split.test.target_ts.tolist() == [[11, 12], [20, 0]]
    assert [h.tolist() for h in split.test.histories] == [[0, 1], [1]]
    assert split.train.ts.max() < 10 and len(split.train) == 3
    # Without release dates, new titles are those nobody watched before the cut-off.
    assert split.new_items.tolist() == [False, False, True, True, True]
    assert split.test.n_cases == 3


def test_temporal_split_marks_new_titles_from_release_dates():
    rows = [("u1", "a", 1), ("u1", "b", 12), ("u1", "c", 13)]
    release = {"a": 0, "b": 5, "c": 11, "unknown-title": 99}
    split = temporal_split(index_interactions(_frame(rows)), TemporalConfig(cutoff_ts=10), release)
    assert split.new_items.tolist() == [False, False, True]
    np.testing.assert_array_equal(split.item_release_ts, [0.0, 5.0, 11.0])


def test_datetime_timestamps_become_unix_seconds():
    frame = pd.DataFrame(
        {
            "user_id": ["u", "u"],
            "title_id": ["x", "y"],
            "ts": pd.to_datetime(["2026-01-01T00:00:10Z", "2026-01-01T00:00:05Z"]),
        }
    )
    interactions = index_interactions(frame)
    assert interactions.ts.tolist() == [1_767_225_605, 1_767_225_610]
    assert interactions.item.tolist() == [1, 0]  # y came first
