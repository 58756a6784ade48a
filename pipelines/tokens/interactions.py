"""Merge session events into interaction tokens, Netflix-style, with Spark window functions.

Consecutive events of one member on one title inside one session become one token (a play_start,
six progress pings and a complete are one "completed" interaction, not eight). Each token keeps
features the model embeds: an action summary, a watch-fraction bucket, a log-scale bucket of the
time since the member's previous token, device, hour and weekday.

``position`` counts tokens over the member's whole history: day D continues from the last
position (and timestamp) the member reached before D (``gold/member_positions``, see ``gold.py``). A
title watched across midnight therefore yields two tokens, one per day, because partitions never
rewrite each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from pipelines.schemas import EVENT_TYPES

WATCH_FRACTION_EDGES: tuple[float, ...] = (0.1, 0.25, 0.5, 0.9)
"""Bucket 0 = no watch signal; 1..5 = fraction below 0.1, 0.25, 0.5, 0.9, and at least 0.9."""

MAX_GAP_BUCKET = 15
"""Bucket 0 = first token of a member's history; 1 = under a minute; then one bucket per doubling."""


@dataclass(frozen=True)
class TokenConfig:
    """Thresholds that turn merged events into an action summary."""

    completed_fraction: float = 0.9
    """Watched at least this fraction of the runtime (or a ``complete`` event) → ``completed``."""
    abandoned_fraction: float = 0.25
    """Stopped below this fraction → ``abandoned``; below it without a stop → ``started``."""
    high_rating: float = 4.0
    """Ratings at or above this (on 0-5) → ``rated_high``."""
    low_rating: float = 2.0
    """Ratings at or below this → ``rated_low``."""


def watch_fraction_bucket(fraction: Column) -> Column:
    """0 when unknown, else 1..5 by ``WATCH_FRACTION_EDGES``."""
    bucket = F.lit(len(WATCH_FRACTION_EDGES) + 1)
    for index, edge in reversed(list(enumerate(WATCH_FRACTION_EDGES, start=1))):
        bucket = F.when(fraction < edge, F.lit(index)).otherwise(bucket)
    return F.when(fraction.isNull(), F.lit(0)).otherwise(bucket).cast("int")


def gap_bucket(gap_seconds: Column) -> Column:
    """0 when there is no previous token, 1 under a minute, then ``2 + floor(log2(minutes))`` capped."""
    minutes = gap_seconds / 60.0
    logged = F.floor(F.log2(F.greatest(minutes, F.lit(1.0)))) + 2
    bucket = F.when(minutes < 1, F.lit(1)).otherwise(F.least(logged, F.lit(MAX_GAP_BUCKET)))
    return F.when(gap_seconds.isNull(), F.lit(0)).otherwise(bucket).cast("int")


def _has(event_type: str) -> Column:
    """Whether the merged events include ``event_type`` (a 0/1 flag column of the aggregate)."""
    return F.col(f"_has_{event_type}") == 1


def _action(config: TokenConfig) -> Column:
    fraction = F.coalesce(F.col("_fraction"), F.lit(0.0))
    played = _has("play_start") | _has("play_progress") | _has("play_stop") | _has("complete")
    return (
        F.when(_has("thumbs_up") | (F.col("_rating") >= config.high_rating), "rated_high")
        .when(_has("thumbs_down") | (F.col("_rating") <= config.low_rating), "rated_low")
        .when(_has("complete") | (fraction >= config.completed_fraction), "completed")
        .when(played & (fraction >= config.abandoned_fraction), "watched")
        .when(played & _has("play_stop"), "abandoned")
        .when(played, "started")
        .when(_has("rate"), "watched")
        .when(_has("add_to_list"), "listed")
        .otherwise("impressed")
    )


def merge_interactions(
    session_events: DataFrame,
    runtimes: DataFrame | None,
    history_state: DataFrame | None,
    config: TokenConfig,
) -> DataFrame:
    """Tokens (the ``gold/interaction_tokens`` contract, minus ``event_date``) from one day's session events.

    ``runtimes``: ``title_id``, ``runtime_seconds`` (watch fraction is unknown without it).
    ``history_state``: per ``user_id`` the ``last_position`` and ``last_ts`` before this day
    (``last_positions`` of the earlier tokens).
    """
    events = session_events
    if runtimes is not None:
        events = events.join(
            F.broadcast(runtimes.select("title_id", "runtime_seconds")), "title_id", "left"
        )
    else:
        events = events.withColumn("runtime_seconds", F.lit(None).cast("double"))

    # One window spec (member, in time) for everything, so events sessionised with the same spec
    # are merged without another shuffle or sort: positions and the previous token's time come
    # from the run numbering, not from a second window over the merged tokens.
    in_time = Window.partitionBy("user_id").orderBy("event_ts", "event_id")
    so_far = in_time.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    boundary = (
        F.lag("title_id").over(in_time).isNull()
        | (F.lag("title_id").over(in_time) != F.col("title_id"))
        | (F.lag("session_id").over(in_time) != F.col("session_id"))
    )
    flagged = events.withColumn("_new", F.when(boundary, 1).otherwise(0))
    starts_run = F.col("_new") == 1
    runs = flagged.select(
        "*",
        F.sum("_new").over(so_far).alias("_run"),
        F.last(F.when(starts_run, F.col("event_ts")), ignorenulls=True)
        .over(so_far)
        .alias("_run_ts"),
        # A token's device is its first event's (a struct, so a null device is carried as-is).
        F.last(F.when(starts_run, F.struct("device")), ignorenulls=True)
        .over(so_far)["device"]
        .alias("_run_device"),
    ).withColumn("_previous_run_ts", F.lag("_run_ts").over(in_time))
    watched = F.greatest(F.col("position_seconds"), F.col("watch_seconds"))
    # Strings are grouping keys (constant within a run) and event types are 0/1 flags, so every
    # aggregation buffer is fixed-width: Spark's hash aggregate, never a sort-based fallback.
    merged = runs.groupBy(
        "user_id",
        "_run",
        "title_id",
        "session_id",
        F.col("_run_device").alias("device"),
    ).agg(
        F.min("event_ts").alias("ts"),
        F.max(F.when(starts_run, F.col("_previous_run_ts"))).alias("_previous_ts"),
        *[F.max((F.col("event_type") == t).cast("int")).alias(f"_has_{t}") for t in EVENT_TYPES],
        F.max("rating").alias("_rating"),
        (F.max(watched) / F.max("runtime_seconds")).alias("_fraction"),
        F.count(F.lit(1)).cast("int").alias("n_events"),
    )
    # least() skips nulls, so an unknown fraction must stay null explicitly.
    fraction = F.when(F.col("_fraction").isNotNull(), F.least(F.col("_fraction"), F.lit(1.0)))
    tokens = merged.withColumn("action", _action(config)).withColumn(
        "watch_fraction_bucket", watch_fraction_bucket(fraction)
    )

    if history_state is not None:
        tokens = tokens.join(history_state, "user_id", "left")
    else:
        tokens = tokens.withColumn("last_position", F.lit(None).cast("long")).withColumn(
            "last_ts", F.lit(None).cast("timestamp")
        )
    previous_ts = F.coalesce(F.col("_previous_ts"), F.col("last_ts"))
    return tokens.select(
        "user_id",
        (F.coalesce(F.col("last_position") + 1, F.lit(0)) + F.col("_run") - 1)
        .cast("long")
        .alias("position"),
        "title_id",
        "action",
        "watch_fraction_bucket",
        gap_bucket(F.col("ts").cast("double") - previous_ts.cast("double")).alias("gap_bucket"),
        "device",
        F.hour("ts").alias("hour"),
        # Monday = 0, as Python's datetime.weekday().
        ((F.dayofweek("ts") + 5) % 7).alias("weekday"),
        "session_id",
        "ts",
        "n_events",
    )


def last_positions(tokens: DataFrame) -> DataFrame:
    """Per member: the last position and the latest token time among ``tokens``.

    Two fixed-width maxima (a hash aggregate). Positions follow event time within a day, so the
    two come from the same token except after a late event, where the latest time is the one a
    time gap should be measured from.
    """
    return tokens.groupBy("user_id").agg(
        F.max("position").alias("last_position"), F.max("ts").alias("last_ts")
    )


def compression(events: int, tokens: int) -> float:
    """Events per token (how much merging shortened the sequences)."""
    return events / tokens if tokens else math.nan
