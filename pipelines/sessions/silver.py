"""Write one day of ``silver/session_events`` and the affected days of ``silver/sessions``.

The pure window logic lives in ``sessionise.py``; this module reads bronze and the previous
day's silver tail from the lake and writes the results with partition-replacing Delta writes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import SparkSession

from pipelines.lake import read_partitions, read_upstream_day, replace_partitions
from pipelines.schemas import SESSION_EVENTS, SESSIONS
from pipelines.sessions.sessionise import (
    SessionConfig,
    previous_day_tail,
    sessionise_events,
    summarise_sessions,
)
from pipelines.settings import Settings


@dataclass(frozen=True)
class SessionReport:
    """What one day's sessionisation wrote."""

    day: dt.date
    session_events: int
    sessions_started: int
    continued_from_previous_day: int
    previous_day_available: bool


def sessionise_day(
    spark: SparkSession, settings: Settings, day: dt.date, config: SessionConfig
) -> SessionReport:
    """Sessionise bronze events of ``day``, continuing the sessions of ``day - 1`` where they cross midnight."""
    events = read_upstream_day(spark, settings.lake_root, "bronze", "events", day)
    previous = day - dt.timedelta(days=1)
    events_path = settings.table_path("silver", "session_events")
    previous_events = read_partitions(spark, events_path, previous)
    has_previous = previous_events is not None and not previous_events.isEmpty()
    tail = previous_day_tail(previous_events) if has_previous else None

    replace_partitions(
        sessionise_events(events, tail, config), events_path, day, schema=SESSION_EVENTS
    )
    written = read_partitions(spark, events_path, day)
    continued = (
        written.join(tail.select("session_id").distinct(), "session_id").count()
        if tail is not None
        else 0
    )

    # Day D's events can extend sessions that started on D-1, so both days' summaries are
    # rewritten. A session starting on D-1 or D can have events arriving from D-1 to D+1 (late
    # or continuing past midnight), and D-2 is read so that a session which merely continues
    # into D-1 keeps its true, earlier start instead of looking as if it began on D-1.
    nearby = read_partitions(
        spark, events_path, day - dt.timedelta(days=2), day + dt.timedelta(days=1)
    )
    replace_partitions(
        summarise_sessions(nearby, previous, day),
        settings.table_path("silver", "sessions"),
        previous,
        day,
        schema=SESSIONS,
    )
    started = read_partitions(spark, settings.table_path("silver", "sessions"), day).count()
    return SessionReport(
        day=day,
        session_events=written.count(),
        sessions_started=started,
        continued_from_previous_day=continued,
        previous_day_available=has_previous,
    )
