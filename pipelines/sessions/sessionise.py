"""Cut each member's events into sessions with Spark window functions.

A new session starts when the gap since the member's previous event is strictly greater than the
inactivity gap (default 30 minutes; a gap exactly equal to it stays in the session). Days are
processed one partition at a time, so a session that crosses midnight is kept whole by reading
the previous day's tail: each member's last session from ``silver/session_events`` of the day
before. Events that continue it inherit its ``session_id`` and keep counting ``seq_in_session``.

Rules a reader of the tables can rely on:

* ``session_id`` is ``sha2(user_id | first event_id)`` of the session's first event, or the
  inherited id when the session started the day before, so re-runs give the same ids.
* Events are ordered by ``(event_ts, event_id)``: arrival order in files never matters.
* ``seq_in_session`` is unique within a session; inside one day it follows event time. A late
  event that arrives the next day gets the next free number after the previous day's ones.
* ``silver/session_events`` keeps bronze's ``event_date`` (the arrival day); ``silver/sessions``
  is partitioned by the date its session started. Processing day D rewrites the sessions of D-1
  and D, because D's events may extend a session that started on D-1.

A session longer than a day (over two or more midnights, no pause over the gap) keeps one
``session_id`` and its numbering; its ``silver/sessions`` row, in the partition of the day it
began, is rewritten whole by every day that touches it (``silver._parts_beyond`` finds its events
outside D-1..D+1), so any run order gives the same tables.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from pipelines.lake import with_run_values
from pipelines.schemas import BRONZE_EVENTS, DEVICES


@dataclass(frozen=True)
class SessionConfig:
    """Sessionisation settings."""

    inactivity_gap_minutes: float = 30.0
    """A gap strictly longer than this (between a member's consecutive events) starts a new session."""


TAIL_COLUMNS = (
    "user_id",
    "event_ts",
    "event_id",
    "session_id",
    "seq_in_session",
    "title_id",
    "device",
)
"""What ``previous_day_tail`` keeps of each event: enough to continue sessions and to summarise them."""


def previous_day_tail(previous_session_events: DataFrame) -> DataFrame:
    """Each member's last session of the previous day: the events a new day may continue.

    The session of each member's latest event (events at the same instant share a session), found
    with a hash aggregate of timestamps and two broadcast semi-joins: no sort of the whole day.
    """
    latest = previous_session_events.groupBy("user_id").agg(F.max("event_ts").alias("event_ts"))
    last_sessions = previous_session_events.join(
        F.broadcast(latest), ["user_id", "event_ts"], "left_semi"
    ).select("session_id")
    return previous_session_events.join(
        F.broadcast(last_sessions), "session_id", "left_semi"
    ).select(*TAIL_COLUMNS)


def sessionise_events(
    events: DataFrame, tail: DataFrame | None, config: SessionConfig
) -> DataFrame:
    """``events`` (bronze rows of one day) with ``session_id`` and ``seq_in_session`` added.

    ``_continued`` marks the events that continue a session of the previous day (not stored).

    ``tail`` is ``previous_day_tail(...)`` of the day before, or None for the first day.
    """
    gap_seconds = config.inactivity_gap_minutes * 60.0
    day_rows = events.select(
        *[F.col(f.name) for f in BRONZE_EVENTS.fields],
        F.lit(None).cast("string").alias("_tail_session"),
        F.lit(None).cast("int").alias("_tail_seq"),
    )
    if tail is not None:
        tail_rows = tail.select(
            *[
                F.col(f.name)
                if f.name in ("user_id", "event_ts", "event_id")
                else F.lit(None).cast(f.dataType).alias(f.name)
                for f in BRONZE_EVENTS.fields
            ],
            F.col("session_id").alias("_tail_session"),
            F.col("seq_in_session").alias("_tail_seq"),
        )
        day_rows = day_rows.unionByName(tail_rows)

    # Every window below shares one spec (member, in time), so Spark shuffles and sorts once;
    # per-session values come from running and whole-member frames instead of a window per
    # session, which would each re-sort the day.
    in_time = Window.partitionBy("user_id").orderBy("event_ts", "event_id")
    so_far = in_time.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    whole_member = in_time.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    is_day_row = F.col("_tail_session").isNull()
    gap = F.col("event_ts").cast("double") - F.lag("event_ts").over(in_time).cast("double")
    starts = day_rows.withColumn(
        "_starts", F.when(gap.isNull() | (gap > gap_seconds), 1).otherwise(0)
    ).withColumn("_day", is_day_row.cast("int"))
    numbered = starts.select(
        "*",
        F.sum("_starts").over(so_far).alias("_session_no"),
        F.sum("_day").over(so_far).alias("_days_so_far"),
        # The tail is one session: every tail row carries the same id.
        F.max("_tail_session").over(whole_member).alias("_tail_id"),
        F.max("_tail_seq").over(whole_member).alias("_tail_last_seq"),
    )
    starting = F.col("_starts") == 1
    located = numbered.select(
        "*",
        F.max(F.when(~is_day_row, F.col("_session_no"))).over(whole_member).alias("_tail_no"),
        F.last(F.when(starting, F.col("event_id")), ignorenulls=True)
        .over(so_far)
        .alias("_first_event"),
        # Day rows seen before this row's session began: seq counts day rows from there.
        F.last(F.when(starting, F.col("_days_so_far") - F.col("_day")), ignorenulls=True)
        .over(so_far)
        .alias("_days_before"),
    )
    inherited = F.coalesce(F.col("_session_no") == F.col("_tail_no"), F.lit(False))
    own_id = F.sha2(F.concat_ws("|", F.col("user_id"), F.col("_first_event")), 256)
    seq_base = F.when(inherited, F.col("_tail_last_seq") + 1).otherwise(F.lit(0))
    return located.where(is_day_row).select(
        *[F.col(f.name) for f in BRONZE_EVENTS.fields],
        F.when(inherited, F.col("_tail_id")).otherwise(own_id).alias("session_id"),
        (seq_base + F.col("_days_so_far") - F.col("_days_before") - 1)
        .cast("int")
        .alias("seq_in_session"),
        inherited.alias("_continued"),
    )


def summarise_sessions(
    session_events: DataFrame, first_day: dt.date, last_day: dt.date
) -> DataFrame:
    """One row per session that started in ``[first_day, last_day]`` (the ``silver/sessions`` contract).

    ``session_events`` must hold every event of those sessions (the arrival days ``first_day`` to
    ``last_day + 1``). A session whose first event (``seq_in_session == 0``) is not among them began
    on an earlier day and continues here: it is left out, so it keeps its true start instead of
    looking as if it began on ``first_day``, and no earlier day has to be read to know that.
    """
    device = F.coalesce("device", F.lit("unknown"))
    # Two hash aggregates with fixed-width buffers (title per session, then session) instead of
    # collect_set, whose object buffers make Spark fall back to sorting the whole input.
    per_title = session_events.groupBy("session_id", "user_id", "title_id").agg(
        F.min("event_ts").alias("start_ts"),
        F.max("event_ts").alias("end_ts"),
        F.count(F.lit(1)).alias("n_events"),
        F.max((F.col("seq_in_session") == 0).cast("int")).alias("_begins_here"),
        *[F.max((device == d).cast("int")).alias(f"_on_{d}") for d in DEVICES],
    )
    sessions = per_title.groupBy("session_id", "user_id").agg(
        F.min("start_ts").alias("start_ts"),
        F.max("end_ts").alias("end_ts"),
        F.sum("n_events").alias("n_events"),
        # Titles are counted once each here (null title ids never pass bronze).
        F.count(F.lit(1)).alias("n_titles"),
        F.max("_begins_here").alias("_begins_here"),
        *[F.max(f"_on_{d}").alias(f"_on_{d}") for d in DEVICES],
    )
    devices = F.filter(
        F.array(*[F.when(F.col(f"_on_{d}") == 1, F.lit(d)) for d in sorted(DEVICES)]),
        lambda d: d.isNotNull(),
    )
    began = sessions.where(F.col("_begins_here") == 1)
    in_range = F.to_date("start_ts").between(F.col("_first_day"), F.col("_last_day"))
    return (
        with_run_values(began, _first_day=first_day, _last_day=last_day)
        .where(in_range)
        .select(
            "session_id",
            "user_id",
            "start_ts",
            "end_ts",
            "n_events",
            "n_titles",
            devices.alias("devices"),
            F.to_date("start_ts").alias("event_date"),
        )
    )
