"""Catalogue rows to metadata features: column layout, missing values, ages, trained mask."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest
import torch

from pipelines.models.metadata import (
    UNKNOWN_MATURITY,
    release_days,
    release_feature,
    title_metadata,
)


def catalogue() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"title_id": "m1", "genres": ["Drama", "Comedy"], "release_date": date(2020, 1, 1),
             "runtime_seconds": 7200.0, "maturity": "R", "series_id": None},
            {"title_id": "e1", "genres": ["Kids"], "release_date": None,
             "runtime_seconds": None, "maturity": None, "series_id": "s1"},
        ]
    )  # fmt: skip


def test_features_follow_the_documented_layout() -> None:
    meta = title_metadata(catalogue(), ["e1", "m1"], ["Comedy", "Drama"], date(2020, 1, 11), {"m1"})
    assert meta.features.shape == (2, 2 + 5)
    e1, m1 = meta.features
    assert m1[:2].tolist() == [1.0, 1.0] and e1[:2].tolist() == [0.0, 0.0]  # Kids not a column
    assert m1[2] == pytest.approx((2020 - 2000) / 30)  # 2020-01-01: 20 years after 2000-01-01
    assert m1[3] == pytest.approx(1.0)  # 2 h runtime is the scale
    assert m1[4] == 1.0 and e1[4] == UNKNOWN_MATURITY
    assert (m1[5], e1[5]) == (0.0, 1.0)  # is-series
    assert (m1[6], e1[6]) == (0.0, 0.0)  # a film; an episode without season and episode numbers
    assert meta.age_days.tolist() == [0.0, 10.0]  # unknown release counts as new
    assert meta.trained_mask.tolist() == [False, True]


def test_a_title_without_a_catalogue_row_is_an_error() -> None:
    with pytest.raises(ValueError, match="no catalogue row"):
        title_metadata(catalogue(), ["m1", "zz"], ["Drama"], date(2020, 1, 1), set())


def test_release_dates_read_back_to_the_day_and_episodes_follow_watch_order() -> None:
    days = [date(1931, 5, 2), date(2000, 1, 1), date(2026, 1, 7), date(2026, 1, 8)]
    rows = torch.tensor([[release_feature(d)] for d in days])
    assert release_days(rows, num_genres=0).tolist() == [(d - date(1970, 1, 1)).days for d in days]
    episodes = pd.DataFrame(
        {
            "title_id": ["s1e2", "s2e1", "s1e10"],
            "genres": [["Drama"]] * 3,
            "release_date": [date(2020, 1, 1)] * 3,
            "runtime_seconds": [1800.0] * 3,
            "maturity": ["TV-14"] * 3,
            "series_id": ["s"] * 3,
            "season": [1, 2, 1],
            "episode": [2, 1, 10],
        }
    )
    meta = title_metadata(episodes, ["s1e2", "s1e10", "s2e1"], [], date(2021, 1, 1), set())
    position = meta.features[:, 4].tolist()
    assert position == sorted(position) and len(set(position)) == 3
