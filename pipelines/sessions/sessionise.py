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
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from pipelines.schemas import BRONZE_EVENTS


@dataclass(frozen=True)
class SessionConfig:
    """Sessionisation settings."""

    inactivity_gap_minutes: float = 30.0
    """A gap strictly longer than this (between a member's consecutive events) starts a new session."""


def previous_day_tail(previous_session_events: DataFrame) -> DataFrame:
    """Each member's last session of the previous day: the events a new day may continue."""
    last_start = Window.partitionBy("user_id")
    with_last = previous_session_events.withColumn(
        "_last_ts", F.max("event_ts").over(last_start)
    ).withColumn(
        "_last_session",
        F.max(F.struct("event_ts", "event_id", "session_id")).over(last_start)["session_id"],
    )
    return with_last.where(F.col("session_id") == F.col("_last_session")).select(
        "user_id", "event_ts", "event_id", "session_id", "seq_in_session"
    )


def sessionise_events(
    events: DataFrame, tail: DataFrame | None, config: SessionConfig
) -> DataFrame:
    """``events`` (bronze rows of one day) with ``session_id`` and ``seq_in_session`` added.

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

    in_time = Window.partitionBy("user_id").orderBy("event_ts", "event_id")
    gap = F.col("event_ts").cast("double") - F.lag("event_ts").over(in_time).cast("double")
    numbered = day_rows.withColumn(
        "_starts", F.when(gap.isNull() | (gap > gap_seconds), 1).otherwise(0)
    ).withColumn("_session_no", F.sum("_starts").over(in_time))

    # Same partitioning key (user_id) as above, so Spark reuses the shuffle and only re-sorts.
    session = Window.partitionBy("user_id", "_session_no")
    is_day_row = F.col("_tail_session").isNull()
    first_event = F.min(F.struct("event_ts", "event_id")).over(session)["event_id"]
    own_id = F.sha2(F.concat_ws("|", F.col("user_id"), first_event), 256)
    day_order = Window.partitionBy("user_id", "_session_no", is_day_row).orderBy(
        "event_ts", "event_id"
    )
    sessionised = (
        numbered.withColumn("_inherited", F.max("_tail_session").over(session))
        .withColumn("_seq_base", F.coalesce(F.max("_tail_seq").over(session) + 1, F.lit(0)))
        .withColumn("session_id", F.coalesce(F.col("_inherited"), own_id))
        .withColumn(
            "seq_in_session",
            (F.col("_seq_base") + F.row_number().over(day_order) - 1).cast("int"),
        )
    )
    return sessionised.where(is_day_row).drop(
        "_tail_session", "_tail_seq", "_starts", "_session_no", "_inherited", "_seq_base"
    )


def summarise_sessions(
    session_events: DataFrame, first_day: dt.date, last_day: dt.date
) -> DataFrame:
    """One row per session that started in ``[first_day, last_day]`` (the ``silver/sessions`` contract)."""
    return (
        session_events.groupBy("session_id")
        .agg(
            F.first("user_id").alias("user_id"),
            F.min("event_ts").alias("start_ts"),
            F.max("event_ts").alias("end_ts"),
            F.count(F.lit(1)).alias("n_events"),
            # size(collect_set) counts the same non-null distinct values as countDistinct without
            # Spark's distinct-aggregate rewrite (an Expand that doubles the rows and a second shuffle).
            F.size(F.collect_set("title_id")).cast("long").alias("n_titles"),
            F.sort_array(F.collect_set(F.coalesce("device", F.lit("unknown")))).alias("devices"),
        )
        .withColumn("event_date", F.to_date("start_ts"))
        .where(F.col("event_date").between(F.lit(first_day), F.lit(last_day)))
    )
