"""Title metadata as the model's feature rows: genres, release date, runtime, maturity, series.

``FoundationModel.set_title_metadata`` takes plain tensors; this module builds them from a
catalogue frame in the ``bronze/titles`` contract, in title-index order, so the cold-start path
has one definition of what "metadata" means. Missing values (the contract's nullable columns)
map to documented neutral values rather than failing, since real catalogues are incomplete.
The release date is fed as fractional years, fine enough that ``release_days`` reads the date
back to the day: the model's freshness bias measures a title's age at each request from it.
Episodes also get their series as an index (``series_indices``), so the model can learn one
embedding per series instead of one pattern per episode.
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
"""Release date is fed as (fractional year - 2000) / 30; a missing date counts as the cut-off."""
DAYS_PER_YEAR = 365.25
"""Length of the fractional year the release date is measured in."""
_ORIGIN_DAY = (date(int(YEAR_ORIGIN), 1, 1) - date(1970, 1, 1)).days
"""Days from the unix epoch to 2000-01-01: release column 0 is this day."""
RUNTIME_SCALE_SECONDS = 7200.0
"""Runtime is fed as log1p(seconds) / log1p(2 h); missing runtime counts as 1 h."""
SEASON_STRIDE, SERIES_POSITION_SCALE = 50, 100.0
"""An episode's place in its series is fed as ((season - 1) * 50 + episode) / 100, so watch
order is the column's order (seasons of up to 50 episodes); films and unknowns are 0. Seen
episodes are not recommended, so "the earliest unseen episode of a series" is the next one."""


@dataclass(frozen=True)
class TitleMetadata:
    """The tensors ``set_title_metadata`` takes, row i = title index i."""

    features: torch.Tensor  # (N, G + 5) float32: genre multi-hot, release date, runtime,
    # maturity, is-series, series position
    age_days: torch.Tensor  # (N,) float32: days from release to the cut-off, >= 0
    trained_mask: torch.Tensor  # (N,) bool: title has interactions in the training data
    series: torch.Tensor  # (N,) int64: series index (see series_indices), NO_SERIES for films


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
    features = torch.zeros(len(title_ids), len(genres) + 5)
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
        features[i, len(genres)] = release_feature(released)
        features[i, len(genres) + 1] = math.log1p(runtime) / math.log1p(RUNTIME_SCALE_SECONDS)
        features[i, len(genres) + 2] = MATURITY_LEVELS.get(row.maturity, UNKNOWN_MATURITY)
        features[i, len(genres) + 3] = float(isinstance(series_id, str) and series_id != "")
        features[i, len(genres) + 4] = series_position(
            getattr(row, "season", None), getattr(row, "episode", None)
        )
        age_days[i] = max((cutoff - released).days, 0)
    trained = torch.tensor([t in trained_title_ids for t in title_ids], dtype=torch.bool)
    series = torch.tensor(series_indices(rows["series_id"].tolist()), dtype=torch.int64)
    return TitleMetadata(features, age_days, trained, series)


NO_SERIES = -1
"""Series index of a film (or an episode whose series the catalogue does not name)."""


def series_indices(series_ids: Sequence[object]) -> list[int]:
    """Each title's series as 0, 1, 2 ... in order of the series' first title, ``NO_SERIES``
    for titles without a series id (``series_ids`` in title-index order).

    Title indices only ever append, so a series keeps its index as the catalogue grows and a new
    series gets the next one: a model trained on a prefix of the catalogue reads the same series.
    """
    index: dict[str, int] = {}
    out = []
    for series_id in series_ids:
        if isinstance(series_id, str) and series_id != "":
            out.append(index.setdefault(series_id, len(index)))
        else:
            out.append(NO_SERIES)
    return out


def release_feature(released: date) -> float:
    """The release-date column's value: years since 2000-01-01 (fractional), over ``YEAR_SCALE``."""
    days = (released - date(1970, 1, 1)).days - _ORIGIN_DAY
    return days / DAYS_PER_YEAR / YEAR_SCALE


def release_days(features: torch.Tensor, num_genres: int) -> torch.Tensor:
    """(N,) float32 release date of each title in days since the unix epoch, read back from the
    release column of metadata rows ``features`` (N, num_genres + 5); exact to the day."""
    column = features[:, num_genres].double()
    return (torch.round(column * YEAR_SCALE * DAYS_PER_YEAR) + _ORIGIN_DAY).float()


def series_position(season: object, episode: object) -> float:
    """The series-position column: ((season - 1) * 50 + episode) / 100, 0 when either is
    missing (a film, or an episode the catalogue does not number)."""
    if not _present(season) or not _present(episode):
        return 0.0
    return ((int(season) - 1) * SEASON_STRIDE + int(episode)) / SERIES_POSITION_SCALE


def _present(value: object) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))
