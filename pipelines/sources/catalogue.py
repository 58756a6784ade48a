"""The synthetic catalogue: films and series episodes with genres, popularity and latent vectors.

The catalogue is one half of the synthetic world (members are the other). It is built from the
generator config and its seed alone, so the generator, the oracle and the evaluator all rebuild
the very same titles. Titles are ordered films first, then the episodes of each series in watch
order: the choice model then treats "episodes" as one contiguous column block.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pipelines.sources.synthetic import SyntheticConfig

GENRES: tuple[str, ...] = (
    "Action",
    "Adventure",
    "Animation",
    "Anime",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Family",
    "Fantasy",
    "Horror",
    "Kids",
    "Music",
    "Mystery",
    "Reality",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
"""The genre vocabulary; a config uses the first ``n_genres`` of them."""

FILM_MATURITY: tuple[str, ...] = ("G", "PG", "PG-13", "R")
SERIES_MATURITY: tuple[str, ...] = ("TV-Y", "TV-PG", "TV-14", "TV-MA")

_ADJECTIVES = (
    "Silent", "Crimson", "Hidden", "Last", "Broken", "Golden", "Midnight", "Frozen", "Wild",
    "Secret", "Lost", "Electric", "Distant", "Burning", "Quiet", "Iron", "Velvet", "Hollow",
    "Bright", "Savage",
)  # fmt: skip
_NOUNS = (
    "Harbor", "Kingdom", "Signal", "Orchard", "Frontier", "Empire", "Garden", "Protocol",
    "Tide", "Witness", "Circuit", "Horizon", "Legacy", "Voyage", "Summit", "Shadow", "River",
    "Archive", "Comet", "Carnival",
)  # fmt: skip


@dataclass(frozen=True)
class Catalogue:
    """Every title as parallel arrays over ``T`` titles (films first, then episodes)."""

    start_date: date
    """Day 0 of the world; every ``release_day`` counts days from it."""
    title_ids: list[str]
    """``t00042``-style ids, index-aligned with every array below."""
    names: list[str]
    """Display names; episodes read ``<series> S1E3``."""
    genres: list[list[str]]
    """1-3 genre names per title (episodes share their series' genres)."""
    release_day: np.ndarray
    """(T,) x int64 days since ``start_date``; negative for back-catalogue titles."""
    runtime_seconds: np.ndarray
    """(T,) x float64; films 90-150 min, episodes 25-60 min."""
    maturity: list[str]
    """MPAA-style rating for films, TV rating for series."""
    series_index: np.ndarray
    """(T,) x int64 index into ``series_ids``, -1 for films."""
    season: np.ndarray
    """(T,) x int64 season number (1-based), 0 for films."""
    episode: np.ndarray
    """(T,) x int64 episode number within its season (1-based), 0 for films."""
    ordinal: np.ndarray
    """(T,) x int64 watch-order position in the series (0-based across seasons), 0 for films."""
    series_ids: list[str]
    """``s0003``-style ids of the series."""
    n_films: int
    """Titles ``[0, n_films)`` are films, ``[n_films, T)`` are episodes."""
    log_popularity: np.ndarray
    """(T,) x float64 log of a Zipf popularity; episodes share their series' popularity."""
    factors: np.ndarray
    """(T, K) x float64 latent title vectors, correlated with the title's genres."""

    @property
    def n_titles(self) -> int:
        return len(self.title_ids)

    @property
    def episode_series(self) -> np.ndarray:
        """(T - n_films,) x int64 series index of each episode column."""
        return self.series_index[self.n_films :]

    @property
    def episode_ordinal(self) -> np.ndarray:
        """(T - n_films,) x int64 watch-order position of each episode column."""
        return self.ordinal[self.n_films :]

    def records_released_by(self, day: date) -> list[dict[str, Any]]:
        """Landing records (``BRONZE_TITLES`` keys) of the titles released on or before ``day``."""
        limit = (day - self.start_date).days
        records = []
        for i in np.flatnonzero(self.release_day <= limit).tolist():
            series = int(self.series_index[i])
            records.append(
                {
                    "title_id": self.title_ids[i],
                    "name": self.names[i],
                    "genres": self.genres[i],
                    "release_date": (
                        self.start_date + timedelta(days=int(self.release_day[i]))
                    ).isoformat(),
                    "runtime_seconds": float(self.runtime_seconds[i]),
                    "maturity": self.maturity[i],
                    "series_id": self.series_ids[series] if series >= 0 else None,
                    "season": int(self.season[i]) if series >= 0 else None,
                    "episode": int(self.episode[i]) if series >= 0 else None,
                }
            )
        return records


def _pick_genres(rng: np.random.Generator, n_genres: int) -> list[int]:
    count = int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2]))
    return sorted(rng.choice(n_genres, size=count, replace=False).tolist())


def build_catalogue(config: SyntheticConfig) -> Catalogue:
    """Build the world's catalogue from ``config`` and ``config.seed`` alone (deterministic)."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0, 0]))
    n_genres = config.n_genres
    if not 1 <= n_genres <= len(GENRES):
        raise ValueError(f"n_genres must be in [1, {len(GENRES)}], got {n_genres}")
    n_episodes_target = int(round(config.n_titles * config.series_fraction))
    n_films = config.n_titles - n_episodes_target
    if n_films < 1:
        raise ValueError("series_fraction leaves no films; lower it below 1.0")
    genre_vectors = rng.normal(size=(n_genres, config.latent_dim))

    # A "work" is a film or a whole series: popularity, genres and taste belong to the work, so
    # every episode of a series is liked (or not) together.
    works: list[dict[str, Any]] = []
    for _ in range(n_films):
        works.append({"kind": "film", "genres": _pick_genres(rng, n_genres)})
    remaining = n_episodes_target
    while remaining > 0:
        n_seasons = int(rng.integers(1, config.max_seasons + 1))
        season_sizes = rng.integers(
            config.min_episodes_per_season, config.max_episodes_per_season + 1, size=n_seasons
        ).tolist()
        sizes: list[int] = []
        for size in season_sizes:
            if remaining <= 0:
                break
            sizes.append(min(size, remaining))
            remaining -= sizes[-1]
        works.append({"kind": "series", "genres": _pick_genres(rng, n_genres), "seasons": sizes})

    # Zipf popularity over works in a random order (rank 1 is the most popular).
    ranks = rng.permutation(len(works)) + 1
    work_log_pop = -config.zipf_exponent * np.log(ranks.astype(np.float64))

    title_ids: list[str] = []
    names: list[str] = []
    genres: list[list[str]] = []
    release: list[int] = []
    runtime: list[float] = []
    maturity: list[str] = []
    series_index: list[int] = []
    season: list[int] = []
    episode: list[int] = []
    ordinal: list[int] = []
    log_pop: list[float] = []
    factors: list[np.ndarray] = []
    series_ids: list[str] = []
    width = max(5, len(str(config.n_titles - 1)))
    in_period = max(config.days, 1)

    def release_day(new: bool) -> int:
        if new:
            return int(rng.integers(0, in_period))
        return -int(rng.integers(1, config.catalogue_history_days + 1))

    # Films first, then series: keeps the episode block contiguous (see module docstring).
    for order, kind in ((0, "film"), (1, "series")):
        for w, work in enumerate(works):
            if work["kind"] != kind:
                continue
            genre_names = [GENRES[g] for g in work["genres"]]
            genre_mean = genre_vectors[work["genres"]].mean(axis=0)
            work_vec = config.genre_taste_weight * genre_mean + (
                1.0 - config.genre_taste_weight
            ) * rng.normal(size=config.latent_dim)
            name = f"The {rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}"
            if order == 0:
                title_ids.append(f"t{len(title_ids):0{width}d}")
                names.append(name)
                genres.append(genre_names)
                release.append(release_day(rng.random() < config.new_release_fraction))
                runtime.append(float(rng.integers(90 * 60, 150 * 60 + 1)))
                maturity.append(str(rng.choice(FILM_MATURITY)))
                series_index.append(-1)
                season.append(0)
                episode.append(0)
                ordinal.append(0)
                log_pop.append(float(work_log_pop[w]))
                factors.append(work_vec)
                continue
            s = len(series_ids)
            series_ids.append(f"s{s:04d}")
            seasons = work["seasons"]
            # New season drops: the last season falls inside the period for some series, so
            # "continue the series" waits on a release date the oracle has to respect.
            last_is_new = bool(rng.random() < config.new_release_fraction)
            n_old = len(seasons) - 1 if last_is_new else len(seasons)
            # Earlier seasons ~300 days apart, the most recent old one before day 0.
            newest_old = -int(rng.integers(1, config.catalogue_history_days + 1))
            season_release = [newest_old - 300 * (n_old - 1 - k) for k in range(n_old)]
            if last_is_new:
                season_release.append(int(rng.integers(0, in_period)))
            base_runtime = float(rng.integers(25, 61)) * 60.0
            rating = str(rng.choice(SERIES_MATURITY))
            k = 0
            for season_no, size in enumerate(seasons, start=1):
                for episode_no in range(1, size + 1):
                    title_ids.append(f"t{len(title_ids):0{width}d}")
                    names.append(f"{name} S{season_no}E{episode_no}")
                    genres.append(genre_names)
                    release.append(season_release[season_no - 1])
                    jitter = float(rng.integers(-120, 121))
                    runtime.append(min(max(base_runtime + jitter, 25 * 60.0), 60 * 60.0))
                    maturity.append(rating)
                    series_index.append(s)
                    season.append(season_no)
                    episode.append(episode_no)
                    ordinal.append(k)
                    log_pop.append(float(work_log_pop[w]))
                    factors.append(work_vec + 0.1 * rng.normal(size=config.latent_dim))
                    k += 1

    return Catalogue(
        start_date=config.start_date,
        title_ids=title_ids,
        names=names,
        genres=genres,
        release_day=np.asarray(release, dtype=np.int64),
        runtime_seconds=np.asarray(runtime, dtype=np.float64),
        maturity=maturity,
        series_index=np.asarray(series_index, dtype=np.int64),
        season=np.asarray(season, dtype=np.int64),
        episode=np.asarray(episode, dtype=np.int64),
        ordinal=np.asarray(ordinal, dtype=np.int64),
        series_ids=series_ids,
        n_films=n_films,
        log_popularity=np.asarray(log_pop, dtype=np.float64),
        factors=np.vstack(factors),
    )
