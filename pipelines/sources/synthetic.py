"""A deterministic, Netflix-like synthetic event source that writes one landing folder per day.

The world (a catalogue of films and series, members with latent tastes) is built from a frozen
``SyntheticConfig`` and its seed. Each simulated day members open sessions (Poisson by
activity), pick titles from the known softmax of ``oracle.Oracle`` (taste + popularity +
freshness + "continue the series", masked by release dates and episode order), watch a fraction
that grows with affinity, and emit impressions, play_start / play_progress / play_stop /
complete, ratings, thumbs and list adds. Per-member state (films seen, series progress, when the
member is next free) carries across days, and sessions that cross midnight land in the next
day's folder. Days are simulated one at a time with numpy over all members at once, so memory is
bounded by one day and throughput is several hundred thousand events per second.

Layout (``<landing_root>`` is ``Settings.landing_root``; ``<source>/date=<day>`` matches
``Settings.landing_path``)::

    <landing_root>/events/date=2026-01-01/part-00000.jsonl   events, <= max_events_per_file lines
    <landing_root>/events/date=2026-01-01/_injected.json     bad-record manifest + the world config, written last
    <landing_root>/titles/date=2026-01-01/titles.jsonl       titles released on or before the day

With ``landing_format="parquet"`` the event part files are ``part-NNNNN.parquet`` instead, with
the typed schema ``landing_parquet_schema()`` (the JSONL keys; ``event_ts`` a UTC timestamp in
milliseconds, the numbers doubles), written row group by row group; the good events are the same
as the JSONL ones of the same seed, at the same row numbers, and the injected rows are the
``bad_records.PARQUET_BAD_KINDS`` a typed row can carry. The format is how the world is written,
not part of it: it is an argument of ``generate`` rather than a ``SyntheticConfig`` field, so the
manifests of one world agree (the evaluation's oracle) whatever format each day was written in.

Run ``python -m pipelines.sources.synthetic --help`` for the command line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from pipelines import storage
from pipelines.schemas import DEVICES, EVENT_TYPES, LANDING_EVENT_FIELDS
from pipelines.sources.bad_records import (
    BAD_KINDS,
    PARQUET_BAD_KINDS,
    plan_injections,
    render_bad_line,
    render_bad_record,
)
from pipelines.sources.members import COUNTRIES
from pipelines.sources.oracle import MS_PER_DAY, WORLD_KEY, Oracle, epoch_ms, world_record

EVENTS_SOURCE = "events"
"""Landing source name of the event files."""
TITLES_SOURCE = "titles"
"""Landing source name of the daily catalogue snapshots."""
MANIFEST_NAME = "_injected.json"
"""Per-day manifest; the leading underscore keeps Spark's file listing from reading it."""
LANDING_FORMATS: tuple[str, ...] = ("jsonl", "parquet")
"""Formats ``generate`` writes event part files in (``landing_format``); JSONL is the default."""
_SUFFIX = {"jsonl": ".jsonl", "parquet": ".parquet"}
_PARQUET_ROW_GROUP = 65_536  # rows per Parquet row group: the unit written (and held) at once

_ET = {name: i for i, name in enumerate(EVENT_TYPES)}
_MAX_IMPRESSIONS = 4  # impressions per play are Poisson, capped so draws per play stay fixed
_ROW_BLOCK = 2_048  # decisions scored at once
_SAMPLE_BLOCK = 64  # titles per block of the two-level sampler


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that defines a synthetic world and its event stream (frozen: a cache key)."""

    seed: int = 7
    """Root of every random draw; same config + seed gives byte-identical files."""
    start_date: date = date(2026, 1, 1)
    """Day 0 of the world: the first day simulated (later days replay from here)."""
    days: int = 7
    """Length of the simulated period; ~new_release_fraction of titles are released inside it."""
    n_titles: int = 2_000
    """Catalogue size, films and episodes together."""
    series_fraction: float = 0.6
    """Share of the catalogue that is series episodes (the rest are films)."""
    min_episodes_per_season: int = 6
    """Fewest episodes in a season."""
    max_episodes_per_season: int = 12
    """Most episodes in a season."""
    max_seasons: int = 3
    """Most seasons in a series (seasons are released ~300 days apart)."""
    n_genres: int = 20
    """How many of ``catalogue.GENRES`` the world uses; each title gets 1-3."""
    new_release_fraction: float = 0.10
    """Share of films (and of series' latest seasons) released inside the period: cold start."""
    catalogue_history_days: int = 3_650
    """Back-catalogue release dates are spread over this many days before day 0."""
    zipf_exponent: float = 1.0
    """Popularity of the rank-r title (film or whole series) is r ** -zipf_exponent."""
    latent_dim: int = 16
    """Rank of the member x title taste model."""
    genre_taste_weight: float = 0.6
    """0..1: how much a title's latent vector follows its genres rather than its own noise."""
    member_taste_scale: float = 1.6
    """Spread of member taste vectors: higher makes members pickier and affinities wider."""
    n_members: int = 5_000
    """Number of members (``u000000``...)."""
    sessions_per_day_mean: float = 0.6
    """Mean sessions per member per weekday; each member's rate is log-normal around it."""
    activity_sigma: float = 0.8
    """Log-normal spread of member activity (0 makes every member equally active)."""
    weekend_boost: float = 1.3
    """Session rate multiplier on Saturdays and Sundays."""
    binge_mean: float = 0.45
    """Mean chance of starting another title after each one in a session."""
    binge_concentration: float = 6.0
    """Beta concentration of members' binge propensity around binge_mean (higher: less spread)."""
    max_plays_per_session: int = 8
    """Cap on titles started in one session."""
    min_session_gap_s: float = 1_800.0
    """A member's next session starts at least this long after the previous one ended."""
    taste_weight: float = 1.0
    """Choice logit weight of taste affinity (member . title / sqrt(latent_dim))."""
    popularity_weight: float = 0.8
    """Choice logit weight of log popularity."""
    freshness_weight: float = 1.5
    """Choice logit bonus of a title released today, decaying with freshness_tau_days."""
    freshness_tau_days: float = 14.0
    """Decay (days) of the freshness bonus."""
    continue_weight: float = 5.0
    """Logit bonus of the next episode of a series in progress, times (0.5 + member binge)."""
    rewatch_penalty: float = -4.0
    """Logit added to films the member already started (rewatches are rare, not impossible)."""
    watch_bias: float = 0.3
    """Watch fraction is sigmoid(watch_bias + watch_slope * affinity + noise)."""
    watch_slope: float = 1.5
    """How strongly affinity drives the watch fraction (liked: complete, disliked: abandon)."""
    watch_noise: float = 0.8
    """Standard deviation of the noise inside the watch-fraction sigmoid."""
    completion_threshold: float = 0.9
    """A sampled watch fraction at or above this is a full watch (a ``complete`` event)."""
    progress_interval_s: float = 600.0
    """A ``play_progress`` heartbeat every this many seconds of watching."""
    impressions_mean: float = 1.5
    """Mean impressions logged while browsing before each title (capped at 4)."""
    rate_prob: float = 0.08
    """Chance a member rates a title after watching it."""
    rating_noise: float = 0.7
    """Noise of the 1-5 rating around 3 + 1.2 * affinity."""
    thumbs_prob: float = 0.10
    """Chance of a thumbs up/down after watching (up when affinity + noise > 0)."""
    list_prob: float = 0.05
    """Chance of an add_to_list of a browsed title before each play."""
    max_events_per_file: int = 250_000
    """Most lines or rows (good + injected) in one ``part-NNNNN.jsonl`` / ``.parquet``."""
    bad_rate: float = 0.0
    """Share of written lines that are injected bad records (see ``bad_records.BAD_KINDS``)."""


PRESETS: dict[str, SyntheticConfig] = {
    # Tests: a few thousand events over three days, in well under a second.
    "tiny": SyntheticConfig(n_titles=100, n_members=200, days=3, sessions_per_day_mean=0.5),
    # The documented demo: a week of a 2,000-title, 5,000-member service.
    "demo": SyntheticConfig(),
    # ~10M events over two weeks, to measure ingestion and training throughput.
    "benchmark": SyntheticConfig(n_members=75_000, days=14),
}
"""Named configs; pick one with ``--preset`` or ``PRESETS[name]``."""


@dataclass(frozen=True)
class DayEvents:
    """One day's events (sorted by time) as parallel arrays over E events."""

    day: int
    """World day (days since ``config.start_date``) these events belong to."""
    user: np.ndarray
    """(E,) x int64 member index."""
    title: np.ndarray
    """(E,) x int64 title index."""
    event_type: np.ndarray
    """(E,) x int64 index into ``EVENT_TYPES``."""
    ts_ms: np.ndarray
    """(E,) x int64 milliseconds since the Unix epoch (UTC)."""
    watch_seconds: np.ndarray
    """(E,) x float64, NaN where null."""
    position_seconds: np.ndarray
    """(E,) x float64, NaN where null."""
    rating: np.ndarray
    """(E,) x int64 1-5, 0 where null."""
    device: np.ndarray
    """(E,) x int64 index into ``DEVICES``."""

    def __len__(self) -> int:
        return len(self.ts_ms)


_COLUMNS = (
    "user", "title", "event_type", "ts_ms", "watch_seconds", "position_seconds", "rating", "device",
)  # fmt: skip


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not parts:
        return {c: np.zeros(0, np.float64 if c.endswith("seconds") else np.int64) for c in _COLUMNS}
    return {c: np.concatenate([p[c] for p in parts]) for c in _COLUMNS}


@dataclass
class _WorldState:
    """Per-member state that carries across days; a function of each member's history."""

    seen_films: np.ndarray  # (N, n_films) x bool: films already started
    progress: np.ndarray  # (N, n_series) x int64: ordinal of each member's next episode
    busy_until_ms: np.ndarray  # (N,) x int64: when the member's last session ended
    carry: dict[int, list[dict[str, np.ndarray]]] = field(default_factory=dict)
    # world day -> events of earlier sessions that spilled past midnight into that day


def _sample_rows(logits: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Sample k titles per row of a softmax: logits (M, T), u (M, k) uniforms -> (M, k) indices.

    Two-level inverse-CDF sampling: a row's CDF over blocks of ``_SAMPLE_BLOCK`` titles picks
    the block, then the CDF inside that block picks the title. A full-row cumsum is the slowest
    step of the whole generator; this touches T / block + k * block entries per row instead.
    ``logits`` is overwritten with the softmax weights to spare a copy.
    """
    m, t = logits.shape
    k = u.shape[1]
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits, out=logits)  # (M, T)
    starts = np.arange(0, t, _SAMPLE_BLOCK)
    block_cdf = np.cumsum(np.add.reduceat(weights, starts, axis=1), axis=1)  # (M, nb)
    total = block_cdf[:, -1:].copy()
    block_cdf /= total
    n_blocks = len(starts)
    rows = np.arange(m, dtype=np.float64)[:, None]
    # One searchsorted over all rows: offset row i's CDF by i so the flat array stays sorted.
    # A block of zero weight has the same offset CDF as the block before, so it is never hit.
    flat = (block_cdf + rows).ravel()
    hit = np.searchsorted(flat, (u + rows).ravel(), side="right") - (
        np.repeat(np.arange(m), k) * n_blocks
    )
    block = np.clip(hit, 0, n_blocks - 1)  # (M * k,)
    row = np.repeat(np.arange(m), k)
    below = np.where(block > 0, block_cdf[row, np.maximum(block - 1, 0)], 0.0)
    residual = (u.ravel() - below) * total[row, 0]  # weight still to cover inside the block
    cols = starts[block][:, None] + np.arange(_SAMPLE_BLOCK)[None, :]  # (M * k, B)
    inside = cols < t
    within = np.where(inside, weights[row[:, None], np.minimum(cols, t - 1)], 0.0)
    past = np.cumsum(within, axis=1) > residual[:, None]
    # Rounding can leave the residual a hair above the block's sum: take its last title with
    # weight then, never a masked (zero-weight) one.
    last_positive = _SAMPLE_BLOCK - 1 - np.argmax((within > 0)[:, ::-1], axis=1)
    offset = np.where(past.any(axis=1), np.argmax(past, axis=1), last_positive)
    return (starts[block] + offset).reshape(m, k)


def _simulate_day(
    config: SyntheticConfig, oracle: Oracle, state: _WorldState, day: int
) -> DayEvents:
    """Simulate every session that starts on world day ``day``; return the events dated that day."""
    cat, mem = oracle.catalogue, oracle.members
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 1, day]))
    world_start = epoch_ms(config.start_date)
    day_start = world_start + day * MS_PER_DAY
    weekday = (config.start_date + timedelta(days=day)).weekday()
    rate = mem.activity * (config.weekend_boost if weekday >= 5 else 1.0)

    # Sessions: count, start time, device and length (in titles) per session.
    n_sessions = rng.poisson(rate)  # (N,)
    sess_member = np.repeat(np.arange(mem.n_members), n_sessions)  # (S,)
    n_s = len(sess_member)
    hour = np.mod(
        mem.peak_hour[sess_member] + rng.normal(size=n_s) * mem.hour_spread[sess_member], 24.0
    )
    sess_start = day_start + (hour * 3_600_000).astype(np.int64)
    device_u = rng.random(n_s)
    sess_device = np.minimum(
        (mem.device_cdf[sess_member] < device_u[:, None]).sum(axis=1), len(DEVICES) - 1
    )
    n_plays = np.minimum(rng.geometric(1.0 - mem.binge[sess_member]), config.max_plays_per_session)
    order = np.lexsort((sess_start, sess_member))  # each member's sessions in time order
    sess_member, sess_start, sess_device, n_plays = (
        sess_member[order],
        sess_start[order],
        sess_device[order],
        n_plays[order],
    )

    # Play slots: a member's plays of the day in order. Round r decides every member's r-th
    # play at once; within a round each member appears once, so state updates never collide.
    slot_session = np.repeat(np.arange(n_s), n_plays)  # (P,)
    slot_member = sess_member[slot_session]
    slot_first = np.ones(len(slot_session), dtype=bool)
    slot_first[1:] = slot_session[1:] != slot_session[:-1]
    per_member = np.bincount(slot_member, minlength=mem.n_members)
    rank = np.arange(len(slot_member)) - (np.cumsum(per_member) - per_member)[slot_member]
    by_round = np.argsort(rank, kind="stable")
    round_sizes = np.bincount(rank) if len(rank) else np.zeros(0, np.int64)

    parts: list[dict[str, np.ndarray]] = []
    session_gap = int(config.min_session_gap_s * 1000)
    interval_ms = int(config.progress_interval_s * 1000)
    begin = 0
    for size in round_sizes.tolist():
        idx = by_round[begin : begin + size]
        begin += size
        m = slot_member[idx]
        sess = slot_session[idx]
        first = slot_first[idx]
        anchor = np.where(
            first, np.maximum(sess_start[sess], state.busy_until_ms[m] + session_gap),
            state.busy_until_ms[m],
        )  # fmt: skip
        browse_ms = rng.integers(20_000, 180_000, size=size)
        t_play = anchor + browse_ms
        days = (t_play - world_start) // MS_PER_DAY
        # Column 0 is the choice; 1..4 impressions; 5 a title added to the list while browsing.
        u = rng.random((size, 2 + _MAX_IMPRESSIONS))
        draws = np.empty(u.shape, dtype=np.int64)
        # Row blocks bound the (rows, T) float block to ~32 MB however many members there are.
        for lo in range(0, size, _ROW_BLOCK):
            b = slice(lo, lo + _ROW_BLOCK)
            logits = oracle.logits(m[b], days[b], state.seen_films[m[b]], state.progress[m[b]])
            draws[b] = _sample_rows(logits, u[b])
        chosen = draws[:, 0]

        # The member's state moves on before the next round (and the next day) decides.
        film = chosen < cat.n_films
        state.seen_films[m[film], chosen[film]] = True
        ep = ~film
        state.progress[m[ep], cat.series_index[chosen[ep]]] = cat.ordinal[chosen[ep]] + 1

        affinity = (mem.factors[m] * cat.factors[chosen]).sum(axis=1) / math.sqrt(config.latent_dim)
        z = (
            config.watch_bias
            + config.watch_slope * affinity
            + config.watch_noise * rng.normal(size=size)
        )
        fraction = 1.0 / (1.0 + np.exp(-z))
        completed = fraction >= config.completion_threshold
        fraction = np.where(completed, 1.0, fraction)
        runtime_ms = (cat.runtime_seconds[chosen] * 1000).astype(np.int64)
        watched_ms = np.maximum((fraction * runtime_ms).astype(np.int64), 5_000)
        t_end = t_play + watched_ms

        n_impr = np.minimum(rng.poisson(config.impressions_mean, size=size), _MAX_IMPRESSIONS)
        listed = rng.random(size) < config.list_prob
        rated = rng.random(size) < config.rate_prob
        rating = np.clip(
            np.rint(3 + 1.2 * affinity + config.rating_noise * rng.normal(size=size)), 1, 5
        ).astype(np.int64)
        thumbed = rng.random(size) < config.thumbs_prob
        thumbs_up = affinity + rng.normal(size=size) > 0
        browse_u = rng.random((size, 1 + _MAX_IMPRESSIONS))
        after_ms = rng.integers(2_000, 30_000, size=(size, 2))
        state.busy_until_ms[m] = t_end + after_ms.max(axis=1)

        device = sess_device[sess]
        n_prog = (watched_ms - 1) // interval_ms
        ended_type = np.where(completed, _ET["complete"], _ET["play_stop"])
        browse_ts = anchor[:, None] + (browse_u * browse_ms[:, None]).astype(np.int64)
        # Browsing can start before midnight while the title is chosen after it: a title
        # released at that midnight is choosable but must not be shown (or listed) before it.
        browse_day = (browse_ts - world_start) // MS_PER_DAY
        # browse_ts column 0 times the list add (draws column -1), columns 1.. the impressions.
        impr_shown = cat.release_day[draws[:, 1 : 1 + _MAX_IMPRESSIONS]] <= browse_day[:, 1:]
        impr_mask = (np.arange(_MAX_IMPRESSIONS)[None, :] < n_impr[:, None]) & impr_shown
        listed &= cat.release_day[draws[:, -1]] <= browse_day[:, 0]
        # Progress heartbeats: k = 1..n_prog per play, expanded without a Python loop.
        prog_play = np.repeat(np.arange(size), n_prog)
        prog_k = np.arange(len(prog_play)) - np.repeat(np.cumsum(n_prog) - n_prog, n_prog) + 1
        prog_s = (prog_k * interval_ms) / 1000.0
        nan = np.full(size, np.nan)
        pieces = [
            # (play rows, title, event type, ts, watch, position, rating)
            (np.arange(size), chosen, _ET["play_start"], t_play, nan, np.zeros(size), 0),
            (prog_play, chosen[prog_play], _ET["play_progress"], t_play[prog_play]
             + prog_k * interval_ms, prog_s, prog_s, 0),
            (np.arange(size), chosen, ended_type, t_end, watched_ms / 1000.0,
             watched_ms / 1000.0, 0),
        ]  # fmt: skip
        impr_play = np.nonzero(impr_mask)[0]
        pieces.append(
            (impr_play, draws[:, 1:1 + _MAX_IMPRESSIONS][impr_mask], _ET["impression"],
             browse_ts[:, 1:][impr_mask], nan[impr_play], nan[impr_play], 0)
        )  # fmt: skip
        lp = np.flatnonzero(listed)
        pieces.append(
            (lp, draws[lp, -1], _ET["add_to_list"], browse_ts[lp, 0], nan[lp], nan[lp], 0)
        )
        rp = np.flatnonzero(rated)
        pieces.append(
            (rp, chosen[rp], _ET["rate"], t_end[rp] + after_ms[rp, 0], nan[rp], nan[rp], rating[rp])
        )
        tp = np.flatnonzero(thumbed)
        thumb_type = np.where(thumbs_up[tp], _ET["thumbs_up"], _ET["thumbs_down"])
        pieces.append(
            (tp, chosen[tp], thumb_type, t_end[tp] + after_ms[tp, 1], nan[tp], nan[tp], 0)
        )
        for rows, title, etype, ts, watch, pos, rat in pieces:
            n = len(rows)
            parts.append(
                {
                    "user": m[rows],
                    "title": np.asarray(title, np.int64),
                    "event_type": np.broadcast_to(np.asarray(etype, np.int64), (n,)).copy(),
                    "ts_ms": np.asarray(ts, np.int64),
                    "watch_seconds": np.asarray(watch, np.float64),
                    "position_seconds": np.asarray(pos, np.float64),
                    "rating": np.broadcast_to(np.asarray(rat, np.int64), (n,)).copy(),
                    "device": device[rows],
                }
            )

    # Today's file = spill-over from earlier days + today's events dated today; the rest of
    # today's events (sessions running past midnight) wait for their own day.
    generated = _concat(parts)
    event_day = (generated["ts_ms"] - world_start) // MS_PER_DAY
    for later in np.unique(event_day[event_day > day]).tolist():
        keep = event_day == later
        state.carry.setdefault(later, []).append({c: v[keep] for c, v in generated.items()})
    today = event_day == day
    merged = _concat([*state.carry.pop(day, []), {c: v[today] for c, v in generated.items()}])
    order = np.argsort(merged["ts_ms"], kind="stable")
    return DayEvents(day=day, **{c: v[order] for c, v in merged.items()})


def simulate(config: SyntheticConfig, oracle: Oracle | None = None) -> Iterator[DayEvents]:
    """Yield each world day's events from day 0 on, forever (stop iterating when done)."""
    oracle = oracle or Oracle.from_config(config)
    n = config.n_members
    state = _WorldState(
        seen_films=np.zeros((n, oracle.catalogue.n_films), dtype=bool),
        progress=np.zeros((n, len(oracle.catalogue.series_ids)), dtype=np.int64),
        busy_until_ms=np.full(n, np.iinfo(np.int64).min // 2, dtype=np.int64),
    )
    day = 0
    while True:
        yield _simulate_day(config, oracle, state, day)
        day += 1


def landing_parquet_schema():
    """The ``pyarrow`` schema of a Parquet landing event file: the JSONL keys, typed, all nullable.

    ``event_ts`` is a UTC timestamp (milliseconds, like the JSONL's ISO strings); the numbers
    are doubles, as in ``bronze/events``. Nullable, so a missing field is a null the ingestion
    rules reject, as a missing JSON key is.
    """
    import pyarrow as pa

    types = {
        "event_ts": pa.timestamp("ms", tz="UTC"),
        "watch_seconds": pa.float64(),
        "position_seconds": pa.float64(),
        "rating": pa.float64(),
    }
    return pa.schema([pa.field(n, types.get(n, pa.string())) for n in LANDING_EVENT_FIELDS])


class _LineFormatter:
    """Turns event rows into JSON lines with f-strings over precomputed pieces (no json.dumps),
    or into Arrow tables of ``landing_parquet_schema`` with vectorised takes."""

    def __init__(self, oracle: Oracle) -> None:
        self.users = np.asarray(oracle.members.user_ids, dtype=object)
        self.member_country = oracle.members.country
        self.countries = np.asarray(COUNTRIES, dtype=object)[oracle.members.country]
        self.titles = np.asarray(oracle.catalogue.title_ids, dtype=object)
        self.types = np.asarray(EVENT_TYPES, dtype=object)
        self.devices = np.asarray(DEVICES, dtype=object)
        self.ratings = np.asarray(["null", "1", "2", "3", "4", "5"], dtype=object)
        self._arrow: dict[str, object] | None = None

    def table(self, events: DayEvents, idx: np.ndarray):
        """A ``pyarrow.Table`` (``landing_parquet_schema``) of the events at positions ``idx``."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if self._arrow is None:
            self._arrow = {
                "users": pa.array(self.users.tolist(), pa.string()),
                "countries": pa.array(list(COUNTRIES), pa.string()),
                "titles": pa.array(self.titles.tolist(), pa.string()),
                "types": pa.array(list(EVENT_TYPES), pa.string()),
                "devices": pa.array(list(DEVICES), pa.string()),
            }
        a = self._arrow
        idx = np.asarray(idx, dtype=np.int64)
        user = events.user[idx]
        watch = events.watch_seconds[idx]
        position = events.position_seconds[idx]
        rating = events.rating[idx]
        columns = {
            "event_id": pc.binary_join_element_wise(
                f"e{events.day}-", pc.cast(pa.array(idx), pa.string()), ""
            ),
            "user_id": a["users"].take(user),
            "title_id": a["titles"].take(events.title[idx]),
            "event_type": a["types"].take(events.event_type[idx]),
            "event_ts": pa.array(events.ts_ms[idx], pa.timestamp("ms", tz="UTC")),
            "watch_seconds": pa.array(watch, pa.float64(), mask=np.isnan(watch)),
            "position_seconds": pa.array(position, pa.float64(), mask=np.isnan(position)),
            "rating": pa.array(rating.astype(np.float64), pa.float64(), mask=rating == 0),
            "device": a["devices"].take(events.device[idx]),
            "country": a["countries"].take(self.member_country[user]),
        }
        return pa.table(columns, schema=landing_parquet_schema())

    @staticmethod
    def _numbers(values: np.ndarray) -> list[str]:
        out = np.full(len(values), "null", dtype=object)
        present = ~np.isnan(values)
        # Heartbeats repeat a few values (600.0, 1200.0, ...): format each distinct value once.
        unique, inverse = np.unique(values[present], return_inverse=True)
        out[present] = np.asarray([repr(v) for v in unique.tolist()], dtype=object)[inverse]
        return out.tolist()

    def lines(self, events: DayEvents, idx: np.ndarray) -> list[str]:
        """JSON lines (each ending in a newline) of the events at positions ``idx``."""
        ts = np.datetime_as_string(events.ts_ms[idx].astype("datetime64[ms]"), unit="ms").tolist()
        user = events.user[idx]
        return [
            f'{{"event_id":"e{events.day}-{n}","user_id":"{u}","title_id":"{t}",'
            f'"event_type":"{e}","event_ts":"{s}Z","watch_seconds":{w},'
            f'"position_seconds":{p},"rating":{r},"device":"{d}","country":"{c}"}}\n'
            for n, u, t, e, s, w, p, r, d, c in zip(
                idx.tolist(),
                self.users[user].tolist(),
                self.titles[events.title[idx]].tolist(),
                self.types[events.event_type[idx]].tolist(),
                ts,
                self._numbers(events.watch_seconds[idx]),
                self._numbers(events.position_seconds[idx]),
                self.ratings[events.rating[idx]].tolist(),
                self.devices[events.device[idx]].tolist(),
                self.countries[user].tolist(),
                strict=True,
            )
        ]


def _write_atomic(path: Path, data: bytes) -> None:
    # Readers (a Dagster sensor, Spark) must never see half a file: write a hidden temp name
    # (Spark skips names starting with "."), then rename over the final name.
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


@dataclass(frozen=True)
class DaySummary:
    """What was written for one day."""

    date: date
    """The day folder's date."""
    events: int
    """Good events written (every one valid)."""
    injected: int
    """Bad lines injected (see ``injected_by_kind`` and the day's manifest)."""
    injected_by_kind: dict[str, int]
    """Injected lines per ``BAD_KINDS`` kind."""
    files: list[str]
    """Event part files, in order."""
    manifest: str
    """Path of the day's ``_injected.json``."""
    titles_file: str
    """Path of the day's catalogue snapshot."""
    titles: int
    """Titles in the snapshot (released on or before the day)."""


@dataclass(frozen=True)
class GenerationSummary:
    """What ``generate`` wrote, day by day, and how fast."""

    days: list[DaySummary]
    """One entry per written day, in date order."""
    seconds: float
    """Wall-clock seconds of the whole call (simulation, replay and writing)."""

    @property
    def events(self) -> int:
        return sum(d.events for d in self.days)

    @property
    def injected(self) -> int:
        return sum(d.injected for d in self.days)

    @property
    def events_per_second(self) -> float:
        return (self.events + self.injected) / self.seconds if self.seconds > 0 else float("inf")


def _write_events_day(
    config: SyntheticConfig,
    events: DayEvents,
    folder: Path,
    formatter: _LineFormatter,
    day: date,
    landing_format: str = "jsonl",
) -> tuple[list[str], dict[str, list[dict[str, object]]], dict[str, dict[str, int]]]:
    """Write one day's part files with bad records injected; return files, injections, totals."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 2, events.day]))
    jsonl = landing_format == "jsonl"
    kinds = BAD_KINDS if jsonl else PARQUET_BAD_KINDS
    suffix = _SUFFIX[landing_format]
    n_good = len(events)
    plan = plan_injections(rng, n_good, config.bad_rate, kinds)
    n_lines = n_good + len(plan.slots)
    per_file = config.max_events_per_file
    n_files = max(1, math.ceil(n_lines / per_file))
    is_bad = np.zeros(n_lines, dtype=bool)
    is_bad[plan.slots] = True
    # Line position of each good event in the day's combined sequence.
    good_pos = np.flatnonzero(~is_bad)

    def where(pos: int) -> dict[str, object]:
        return {"file": f"part-{pos // per_file:05d}{suffix}", "line": pos % per_file + 1}

    # slot -> the injected line (JSONL bytes) or row (a typed record, Parquet)
    bad_lines: dict[int, bytes] = {}
    bad_rows: dict[int, dict[str, object]] = {}
    injected: dict[str, list[dict[str, object]]] = {kind: [] for kind in kinds}
    for n, (slot, kind, source) in enumerate(
        zip(plan.slots.tolist(), plan.kinds, plan.sources.tolist(), strict=True)
    ):
        fresh_id = f"e{events.day}-x{n}"
        if jsonl:
            source_line = formatter.lines(events, np.array([source]))[0]
            bad_lines[slot] = render_bad_line(kind, source_line, fresh_id, day, rng)
        else:
            record = formatter.table(events, np.array([source])).to_pylist()[0]
            bad_rows[slot] = render_bad_record(kind, record, fresh_id, day, rng)
        entry = where(slot)
        if kind in ("duplicate_event_id", "duplicate_line"):
            entry["duplicate_of"] = where(int(good_pos[source]))
        injected[kind].append(entry)

    files: list[str] = []
    totals: dict[str, dict[str, int]] = {}
    for k in range(n_files):
        lo, hi = k * per_file, min((k + 1) * per_file, n_lines)
        n_bad_here = int(is_bad[lo:hi].sum())
        name = f"part-{k:05d}{suffix}"
        if jsonl:
            _write_jsonl_part(folder / name, events, formatter, lo, hi, is_bad, good_pos, bad_lines)
        else:
            _write_parquet_part(
                folder / name, events, formatter, lo, hi, is_bad, good_pos, bad_rows
            )
        files.append(str(folder / name))
        totals[name] = {"lines": hi - lo, "good": hi - lo - n_bad_here, "injected": n_bad_here}
    # A rerun with fewer shards, or in the other format, must not leave stale parts behind.
    for stale in [*folder.glob("part-*.jsonl"), *folder.glob("part-*.parquet")]:
        if str(stale) not in files:
            stale.unlink()
    return files, injected, totals


def _write_jsonl_part(
    path: Path,
    events: DayEvents,
    formatter: _LineFormatter,
    lo: int,
    hi: int,
    is_bad: np.ndarray,
    good_pos: np.ndarray,
    bad_lines: dict[int, bytes],
) -> None:
    """Write lines ``[lo, hi)`` of the day (good events and the injected lines between them)."""
    chunks: list[bytes] = []
    cursor = lo
    for stop in [*(np.flatnonzero(is_bad[lo:hi]) + lo).tolist(), hi]:
        # Good lines between two bad slots are formatted and encoded in one go.
        good = np.flatnonzero(~is_bad[cursor:stop]) + cursor
        if len(good):
            first = np.searchsorted(good_pos, good[0])
            chunks.append(
                "".join(formatter.lines(events, np.arange(first, first + len(good)))).encode()
            )
        if stop < hi:
            chunks.append(bad_lines[stop])
        cursor = stop + 1
    _write_atomic(path, b"".join(chunks))


def _write_parquet_part(
    path: Path,
    events: DayEvents,
    formatter: _LineFormatter,
    lo: int,
    hi: int,
    is_bad: np.ndarray,
    good_pos: np.ndarray,
    bad_rows: dict[int, dict[str, object]],
) -> None:
    """Write rows ``[lo, hi)`` of the day as a Parquet file, one row group at a time.

    Only one row group (``_PARQUET_ROW_GROUP`` rows) is built in memory at once; the file is
    written under a hidden temporary name and renamed when complete, as the JSONL parts are.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = landing_parquet_schema()
    tmp = path.with_name(f".{path.name}.tmp")
    with pq.ParquetWriter(tmp, schema, compression="snappy") as writer:
        for a in range(lo, hi, _PARQUET_ROW_GROUP):
            b = min(a + _PARQUET_ROW_GROUP, hi)
            bad = is_bad[a:b]
            good = np.flatnonzero(~bad) + a
            first = int(np.searchsorted(good_pos, good[0])) if len(good) else 0
            table = formatter.table(events, np.arange(first, first + len(good)))
            if bad.any():
                slots = (np.flatnonzero(bad) + a).tolist()
                injected = pa.Table.from_pylist([bad_rows[s] for s in slots], schema=schema)
                # Row i of the group: the next good event, or the next injected row.
                order = np.empty(b - a, dtype=np.int64)
                order[~bad] = np.arange(len(good))
                order[bad] = len(good) + np.arange(len(slots))
                table = pa.concat_tables([table, injected]).take(order)
            writer.write_table(table, row_group_size=b - a)
    os.replace(tmp, path)


def generate(
    config: SyntheticConfig,
    landing_root: str | os.PathLike[str],
    start_date: date | None = None,
    days: int | None = None,
    *,
    progress: bool = False,
    landing_format: str = "jsonl",
) -> GenerationSummary:
    """Write the landing folders of days ``[start_date, start_date + days)``.

    Defaults to the whole simulated period (``config.start_date``, ``config.days``). Days
    before ``start_date`` are simulated but not written, so generating one day at a time (a
    daily partition) gives the same bytes as generating the whole range at once. Days after the
    period are allowed (no new releases then). ``landing_format`` (``LANDING_FORMATS``) is the
    event files' format: ``jsonl`` lines or typed ``parquet`` rows, the same events either way.
    """
    if landing_format not in LANDING_FORMATS:
        raise ValueError(f"landing_format must be one of {LANDING_FORMATS}, got {landing_format!r}")
    start_date = start_date or config.start_date
    days = config.days if days is None else days
    first = (start_date - config.start_date).days
    if first < 0:
        raise ValueError(
            f"start_date {start_date} is before the world's first day {config.start_date}; "
            "days before the world starts have no events"
        )
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    began = time.perf_counter()
    oracle = Oracle.from_config(config)
    formatter = _LineFormatter(oracle)
    root = Path(storage.local_path(landing_root, "the synthetic generator"))
    summaries: list[DaySummary] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=first + days, unit="day", desc="synthetic events")
    for events in simulate(config, oracle):
        if events.day >= first:
            summaries.append(_write_day(config, oracle, formatter, events, root, landing_format))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(events=sum(s.events for s in summaries))
        if events.day == first + days - 1:
            break
    if bar is not None:
        bar.close()
    return GenerationSummary(days=summaries, seconds=time.perf_counter() - began)


def _write_day(
    config: SyntheticConfig,
    oracle: Oracle,
    formatter: _LineFormatter,
    events: DayEvents,
    root: Path,
    landing_format: str = "jsonl",
) -> DaySummary:
    day = config.start_date + timedelta(days=events.day)
    events_folder = root / EVENTS_SOURCE / f"date={day.isoformat()}"
    titles_folder = root / TITLES_SOURCE / f"date={day.isoformat()}"
    events_folder.mkdir(parents=True, exist_ok=True)
    titles_folder.mkdir(parents=True, exist_ok=True)

    records = oracle.catalogue.records_released_by(day)
    titles_path = titles_folder / "titles.jsonl"
    _write_atomic(
        titles_path,
        "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode(),
    )

    files, injected, totals = _write_events_day(
        config, events, events_folder, formatter, day, landing_format
    )
    manifest = {
        "date": day.isoformat(),
        "seed": config.seed,
        "bad_rate": config.bad_rate,
        # The whole config: an evaluator rebuilds the oracle of this world from it.
        WORLD_KEY: world_record(config),
        "landing_format": landing_format,
        # JSONL: line in the file; Parquet: row index in the file (what bronze's line_number says).
        "line_numbers": "1-based",
        "files": totals,
        "injected": injected,
        "totals": {
            "lines": sum(t["lines"] for t in totals.values()),
            "good": sum(t["good"] for t in totals.values()),
            "injected": sum(t["injected"] for t in totals.values()),
            "by_kind": {kind: len(v) for kind, v in injected.items()},
        },
    }
    manifest_path = events_folder / MANIFEST_NAME
    # Written last: its presence says the day's part files are complete.
    _write_atomic(manifest_path, (json.dumps(manifest) + "\n").encode())
    return DaySummary(
        date=day,
        events=len(events),
        injected=manifest["totals"]["injected"],
        injected_by_kind=manifest["totals"]["by_kind"],
        files=files,
        manifest=str(manifest_path),
        titles_file=str(titles_path),
        titles=len(records),
    )


def scale_to_target_events(config: SyntheticConfig, target_events: int) -> SyntheticConfig:
    """The config with ``n_members`` set so the period holds about ``target_events`` events.

    Events per member-day are measured on a small pilot world (same config, at most 2,000
    members, up to 7 days, nothing written) rather than guessed from the parameters.
    """
    if target_events < 1:
        raise ValueError(f"target_events must be >= 1, got {target_events}")
    pilot = replace(config, n_members=min(config.n_members, 2_000))
    pilot_days = min(config.days, 7)
    counted = 0
    for events in simulate(pilot):
        counted += len(events)
        if events.day == pilot_days - 1:
            break
    per_member_day = max(counted / (pilot.n_members * pilot_days), 1e-9)
    members = max(1, round(target_events / (per_member_day * config.days)))
    return replace(config, n_members=int(members))


def main(argv: list[str] | None = None) -> GenerationSummary:
    """Command line: write a synthetic world's landing folders (see ``--help``)."""
    from pipelines.settings import Settings

    parser = argparse.ArgumentParser(
        prog="python -m pipelines.sources.synthetic",
        description="Write deterministic Netflix-like viewing events, one landing folder per day.",
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="demo", help="base config")
    parser.add_argument("--seed", type=int, help="random seed (default: the preset's)")
    parser.add_argument(
        "--start-date", type=date.fromisoformat, help="world day 0, YYYY-MM-DD (default: preset's)"
    )
    parser.add_argument("--days", type=int, help="days in the simulated period (default: preset's)")
    parser.add_argument(
        "--only-date",
        type=date.fromisoformat,
        help="write just this day (earlier days are replayed, not written): a daily partition",
    )
    parser.add_argument(
        "--landing-root",
        default=None,
        help="landing root (default: REELFM_LANDING_ROOT or $REELFM_HOME/landing)",
    )
    parser.add_argument("--bad-rate", type=float, help="share of injected bad lines, e.g. 0.01")
    parser.add_argument(
        "--target-events", type=int, help="scale the number of members to write about N events"
    )
    parser.add_argument("--max-events-per-file", type=int, help="lines per part file")
    parser.add_argument(
        "--landing-format",
        choices=LANDING_FORMATS,
        default="jsonl",
        help="event part files: JSON lines (default) or typed Parquet (same events, faster to "
        "ingest; bad records limited to what typed rows can carry)",
    )
    args = parser.parse_args(argv)

    config = PRESETS[args.preset]
    overrides = {
        "seed": args.seed,
        "start_date": args.start_date,
        "days": args.days,
        "bad_rate": args.bad_rate,
        "max_events_per_file": args.max_events_per_file,
    }
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    if args.target_events is not None:
        config = scale_to_target_events(config, args.target_events)
    landing_root = args.landing_root or Settings.from_env().landing_root
    if args.only_date is not None:
        summary = generate(
            config,
            landing_root,
            args.only_date,
            1,
            progress=True,
            landing_format=args.landing_format,
        )
    else:
        summary = generate(config, landing_root, progress=True, landing_format=args.landing_format)
    print(
        f"wrote {summary.events:,} events + {summary.injected:,} injected bad lines over "
        f"{len(summary.days)} day(s) to {landing_root} ({args.landing_format}) in "
        f"{summary.seconds:.1f} s "
        f"({summary.events_per_second:,.0f} lines/s; {config.n_members:,} members, "
        f"{config.n_titles:,} titles, seed {config.seed})"
    )
    return summary


if __name__ == "__main__":
    main()
