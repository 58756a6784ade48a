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
    with_run_values,
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
    # The sessions D continues from the tail (none without one). Detached: read by a join here
    # and by the walk back below, computed once.
    continued = None
    if tail is not None:
        continued = detach(sessionised.where(F.col("_continued")).select("session_id").distinct())
        # Only the tail's sessions that D continues: the rest ended on D-1 and keep the rows
        # D-1's run wrote. (The whole tail, every member's last session, was as many events
        # as the day itself, summarised again each night for nothing.)
        crossing.append(tail.join(F.broadcast(continued), "session_id", "left_semi"))
    # Sessions longer than a day: the parts outside D-1..D+1 (before D-1 when the tail's session
    # began earlier, after D+1 when a re-run day's session goes on), so each is summarised whole.
    beyond, earlier_days = _parts_beyond(spark, events_path, day, tail, continued, into_later)
    if beyond is not None:
        crossing.append(beyond)
    crossing_rows = reduce(DataFrame.unionByName, [p.select(*_SUMMARY_COLUMNS) for p in crossing])
    first_day = min([previous, *earlier_days])
    # Cached: the write reads it twice (its rows, and which of D-1's stored rows it replaces)
    # under plans too different for Spark to reuse the shuffles between them.
    crossing_summary = summarise_sessions(crossing_rows, first_day, day).cache()
    if earlier_days:
        _update_earlier_summaries(spark, sessions_path, crossing_summary, earlier_days)
        crossing_summary = crossing_summary.where(F.col("event_date") >= F.lit(previous))
    summary = summarise_sessions(within_day, previous, day).unionByName(crossing_summary)
    stored = read_partitions(spark, sessions_path, previous)
    rows = summary
    if stored is not None:
        # The sessions of D-1 rewritten here, without summarising the day twice: those that
        # cross a midnight (from the cached summary) and those wholly within D's events whose
        # first event is on D-1 (late arrivals).
        rewritten = crossing_summary.where(F.col("event_date") == F.lit(previous)).select(
            "session_id"
        )
        rewritten = rewritten.unionByName(
            with_run_values(within_day, _previous=previous)
            .where((F.col("seq_in_session") == 0) & (F.to_date("event_ts") == F.col("_previous")))
            .select("session_id")
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
    crossing_summary.unpersist()
    if continued is not None:
        release(continued)
    # Counted from the Delta log's per-file statistics: no data is read again.
    started = read_partitions(spark, sessions_path, day).count()
    return started


def _parts_beyond(
    spark: SparkSession,
    events_path: str,
    day: dt.date,
    tail: DataFrame | None,
    continued: DataFrame | None,
    into_later: DataFrame,
) -> tuple[DataFrame | None, list[dt.date]]:
    """The events outside partitions D-1..D+1 of the sessions D's rewrite summarises, and the
    days before D-1 on which some of them began.

    Backwards: a session of the tail that D continues (``continued``: its ids among D's events)
    without its first event (seq 0) on D-1 began earlier; walk back a partition at a time until
    each one's first event is found. A tail session D does not continue is left alone: it ended
    on D-1 and was summarised whole when D-1 ran. (Every member's last session of a day is in the
    tail, so there are many of those; walking them all back was a third of silver's time on a
    benchmark day.) Forwards (a re-run, D+2 present): a session continuing into D+1 may go on;
    walk on while a partition holds it. A session's calendar days have no gaps (no pause is over
    the inactivity gap), so the walk stops at the first partition without any of its events.
    Rare and small: on most days both sets are empty and this costs one aggregate of the tail
    and one of D+1.
    """
    earlier: list[str] = []
    if tail is not None:
        earlier = [
            row["session_id"]
            for row in tail.groupBy("session_id")
            .agg(F.min("seq_in_session").alias("_first_seq"))
            .where(F.col("_first_seq") > 0)
            .join(F.broadcast(continued), "session_id", "left_semi")
            .select("session_id")
            .collect()
        ]
    going_on = [row["session_id"] for row in into_later.collect()]
    parts, started_on = [], []
    for ids, start, step in (
        (earlier, day - dt.timedelta(days=2), -1),
        (going_on, day + dt.timedelta(days=2), 1),
    ):
        when, wanted = start, set(ids)
        while wanted:
            rows = read_partitions(spark, events_path, when)
            found = rows.where(F.col("session_id").isin(sorted(wanted))).select(*_SUMMARY_COLUMNS)
            hits = found.collect()
            if not hits:
                break
            parts.extend(hits)
            if step < 0:
                began = {r["session_id"] for r in hits if r["seq_in_session"] == 0}
                started_on += [when] if began else []
                wanted -= began
            else:
                wanted = {r["session_id"] for r in hits}
            when += dt.timedelta(days=step)
    if not parts:
        return None, []
    schema = read_partitions(spark, events_path, day).select(*_SUMMARY_COLUMNS).schema
    return spark.createDataFrame(parts, schema), started_on


def _update_earlier_summaries(
    spark: SparkSession, sessions_path: str, summaries: DataFrame, days: list[dt.date]
) -> None:
    """Replace the rows of sessions in ``summaries`` that began on ``days`` (before D-1) in their
    own ``silver/sessions`` partitions, keeping every other session of those days."""
    for started in days:
        rows = summaries.where(F.col("event_date") == F.lit(started))
        stored = read_partitions(spark, sessions_path, started)
        if stored is not None:
            kept = stored.join(F.broadcast(rows.select("session_id")), "session_id", "left_anti")
            rows = rows.unionByName(kept.select(*rows.columns))
        replace_partitions(
            rows,
            sessions_path,
            started,
            schema=SESSIONS,
            stats_columns=SKIPPING_STATS["silver/sessions"],
        )


def sessionise_day(
    spark: SparkSession, settings: Settings, day: dt.date, config: SessionConfig
) -> SessionReport:
    """Sessionise bronze events of ``day``, continuing the sessions of ``day - 1`` where they cross midnight."""
    with sessionised_day(spark, settings, day, config) as (report, _):
        return report
