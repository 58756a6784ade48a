"""Title metadata as the model's feature rows: genres, release year, runtime, maturity, series.

``FoundationModel.set_title_metadata`` takes plain tensors; this module builds them from a
catalogue frame in the ``bronze/titles`` contract, in title-index order, so the cold-start path
has one definition of what "metadata" means. Missing values (the contract's nullable columns)
map to documented neutral values rather than failing, since real catalogues are incomplete.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import pandas as pd
import torch

MATURITY_LEVELS: dict[str, float] = {
    "G": 0.0, "TV-Y": 0.0, "TV-Y7": 0.1, "TV-G": 0.1,
    "PG": 0.33, "TV-PG": 0.33,
    "PG-13": 0.67, "TV-14": 0.67,
    "R": 1.0, "NC-17": 1.0, "TV-MA": 1.0,
}  # fmt: skip
"""US film and TV ratings on one 0 (all ages) .. 1 (adults) scale."""
UNKNOWN_MATURITY = 0.5
"""Maturity of a title whose rating is missing or not in ``MATURITY_LEVELS``."""
YEAR_ORIGIN, YEAR_SCALE = 2000.0, 30.0
"""Release year is fed as (year - 2000) / 30; a missing date counts as the cut-off year."""
RUNTIME_SCALE_SECONDS = 7200.0
"""Runtime is fed as log1p(seconds) / log1p(2 h); missing runtime counts as 1 h."""


@dataclass(frozen=True)
class TitleMetadata:
    """The three tensors ``set_title_metadata`` takes, row i = title index i."""

    features: torch.Tensor  # (N, G + 4) float32: genre multi-hot, year, runtime, maturity, series
    age_days: torch.Tensor  # (N,) float32: days from release to the cut-off, >= 0
    trained_mask: torch.Tensor  # (N,) bool: title has interactions in the training data


def title_metadata(
    titles: pd.DataFrame,
    title_ids: Sequence[str],
    genres: Sequence[str],
    cutoff: date,
    trained_title_ids: set[str],
) -> TitleMetadata:
    """Feature rows for ``title_ids`` (the tokenizer's id order) from a ``bronze/titles`` frame.

    ``genres`` fixes the multi-hot column order (genres outside it are ignored); ``cutoff`` is
    the training cut-off date that title ages are measured at; ``trained_title_ids`` are titles
    that occur in the training tokens. Every id must have a catalogue row.
    """
    by_id = titles.set_index("title_id")
    missing = [t for t in title_ids if t not in by_id.index]
    if missing:
        raise ValueError(f"{len(missing)} title ids have no catalogue row, e.g. {missing[:5]}")
    rows = by_id.loc[list(title_ids)]
    genre_column = {g: i for i, g in enumerate(genres)}
    features = torch.zeros(len(title_ids), len(genres) + 4)
    age_days = torch.zeros(len(title_ids))
    for i, row in enumerate(rows.itertuples()):
        for genre in [] if row.genres is None else list(row.genres):
            if genre in genre_column:
                features[i, genre_column[genre]] = 1.0
        release = row.release_date
        if isinstance(release, pd.Timestamp):
            release = release.date()
        released = release if isinstance(release, date) else cutoff
        runtime = row.runtime_seconds
        runtime = 3600.0 if runtime is None or math.isnan(runtime) else float(runtime)
        series_id = row.series_id
        features[i, len(genres)] = (released.year - YEAR_ORIGIN) / YEAR_SCALE
        features[i, len(genres) + 1] = math.log1p(runtime) / math.log1p(RUNTIME_SCALE_SECONDS)
        features[i, len(genres) + 2] = MATURITY_LEVELS.get(row.maturity, UNKNOWN_MATURITY)
        features[i, len(genres) + 3] = float(isinstance(series_id, str) and series_id != "")
        age_days[i] = max((cutoff - released).days, 0)
    trained = torch.tensor([t in trained_title_ids for t in title_ids], dtype=torch.bool)
    return TitleMetadata(features, age_days, trained)
