"""Write one day of ``silver/session_events`` and the affected days of ``silver/sessions``.

The pure window logic lives in ``sessionise.py``; this module reads bronze and the previous
day's silver tail from the lake and writes the results with partition-replacing Delta writes.
``sessionised_day`` keeps the day's sessionised events cached and partitioned by member, so gold
can tokenise them without a second read or shuffle (``pipelines/tokens/gold.py``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import reduce

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines.lake import (
    detach,
    read_partitions,
    read_upstream_day,
    release,
    replace_partitions,
)
from pipelines.schemas import SESSION_EVENTS, SESSIONS, SKIPPING_STATS
from pipelines.sessions.sessionise import (
    SessionConfig,
    previous_day_tail,
    sessionise_events,
    summarise_sessions,
)
from pipelines.settings import Settings

_SUMMARY_COLUMNS = ("session_id", "user_id", "event_ts", "title_id", "device", "seq_in_session")


@dataclass(frozen=True)
class SessionReport:
    """What one day's sessionisation wrote."""

    day: dt.date
    session_events: int
    sessions_started: int
    continued_from_previous_day: int
    previous_day_available: bool


@contextmanager
def sessionised_day(
    spark: SparkSession, settings: Settings, day: dt.date, config: SessionConfig
) -> Iterator[tuple[SessionReport, DataFrame]]:
    """Sessionise and write ``day``; yield the report and the day's session events, cached.

    The cache is dropped when the block exits. Day D's events can extend sessions that started
    on D-1, so the summaries of both days are rewritten.
    """
    events = read_upstream_day(spark, settings.lake_root, "bronze", "events", day)
    previous = day - dt.timedelta(days=1)
    events_path = settings.table_path("silver", "session_events")
    previous_events = read_partitions(spark, events_path, previous)
    has_previous = previous_events is not None and not previous_events.isEmpty()
    # Kept: the tail feeds both sessionisation and the summaries of the sessions D continues.
    # Detached from silver/session_events, which is written below: a cache reading that table
    # would be recomputed after the write, and the day's sessionised events with it.
    tail = detach(previous_day_tail(previous_events)) if has_previous else None
    sessionised = sessionise_events(events, tail, config).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        counts = sessionised.agg(
            F.count(F.lit(1)).alias("events"), F.count_if("_continued").alias("continued")
        ).first()
        replace_partitions(
            sessionised,
            events_path,
            day,
            schema=SESSION_EVENTS,
            stats_columns=SKIPPING_STATS["silver/session_events"],
        )
        started = _rewrite_summaries(spark, settings, day, sessionised, tail)
        report = SessionReport(
            day=day,
            session_events=int(counts["events"]),
            sessions_started=started,
            continued_from_previous_day=int(counts["continued"]),
            previous_day_available=has_previous,
        )
        yield report, sessionised
    finally:
        sessionised.unpersist()
        if tail is not None:
            release(tail)


def _rewrite_summaries(
    spark: SparkSession,
    settings: Settings,
    day: dt.date,
    sessionised: DataFrame,
    tail: DataFrame | None,
) -> int:
    """Rewrite ``silver/sessions`` for D-1 and D; returns the number of sessions started on D.

    Only sessions with events on D change. Most lie wholly within D and are summarised from the
    cache where they are, already partitioned by member (no shuffle). The rest cross a midnight:
    they continue the previous day's tail (the one session per member D can continue) or go on
    into D+1 (present when an earlier day is re-run), and are summarised from those parts
    together. The other sessions of D-1 keep their stored rows, so the previous day's events are
    never read again.
    """
    previous = day - dt.timedelta(days=1)
    events_path = settings.table_path("silver", "session_events")
    sessions_path = settings.table_path("silver", "sessions")
    later = read_partitions(spark, events_path, day + dt.timedelta(days=1))
    # Sessions of D that D+1 continues have no first event (seq 0) on D+1.
    into_later = (
        later.groupBy("session_id")
        .agg(F.max((F.col("seq_in_session") == 0).cast("int")).alias("_starts_there"))
        .where(F.col("_starts_there") == 0)
        .select("session_id")
    )
    starts_on_day = sessionised.where(~F.col("_continued"))
    within_day = starts_on_day.join(F.broadcast(into_later), "session_id", "left_anti")
    crossing = [
        sessionised.where(F.col("_continued")),
        starts_on_day.join(F.broadcast(into_later), "session_id", "left_semi"),
        later.join(F.broadcast(into_later), "session_id", "left_semi"),
    ]
    if tail is not None:
        crossing.append(tail)
    crossing_rows = reduce(DataFrame.unionByName, [p.select(*_SUMMARY_COLUMNS) for p in crossing])
    crossing_summary = summarise_sessions(crossing_rows, previous, day)
    summary = summarise_sessions(within_day, previous, day).unionByName(crossing_summary)
    stored = read_partitions(spark, sessions_path, previous)
    rows = summary
    if stored is not None:
        # The sessions of D-1 rewritten here, without summarising the day twice: those that
        # cross a midnight (their shuffles are shared with the write's: exchange reuse) and
        # those wholly within D's events whose first event is on D-1 (late arrivals).
        rewritten = crossing_summary.where(F.col("event_date") == F.lit(previous)).select(
            "session_id"
        )
        rewritten = rewritten.unionByName(
            within_day.where(
                (F.col("seq_in_session") == 0) & (F.to_date("event_ts") == F.lit(previous))
            ).select("session_id")
        )
        kept = stored.join(F.broadcast(rewritten), "session_id", "left_anti")
        rows = summary.unionByName(kept.select(*summary.columns))
    replace_partitions(
        rows,
        sessions_path,
        previous,
        day,
        schema=SESSIONS,
        stats_columns=SKIPPING_STATS["silver/sessions"],
    )
    # Counted from the Delta log's per-file statistics: no data is read again.
    started = read_partitions(spark, sessions_path, day).count()
    return started


def sessionise_day(
    spark: SparkSession, settings: Settings, day: dt.date, config: SessionConfig
) -> SessionReport:
    """Sessionise bronze events of ``day``, continuing the sessions of ``day - 1`` where they cross midnight."""
    with sessionised_day(spark, settings, day, config) as (report, _):
        return report
