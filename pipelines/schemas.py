"""The table contracts of ``ARCHITECTURE.md`` as Spark schemas, and the enums they use.

Other teams read these tables, so the column names, types and allowed values live here once and
every writer and test imports them rather than restating them.
"""

from __future__ import annotations

from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

EVENT_TYPES: tuple[str, ...] = (
    "play_start",
    "play_progress",
    "play_stop",
    "complete",
    "rate",
    "thumbs_up",
    "thumbs_down",
    "add_to_list",
    "impression",
)
"""Every ``event_type`` the lake accepts; anything else is rejected with reason ``bad_enum:event_type``."""

DEVICES: tuple[str, ...] = ("tv", "mobile", "tablet", "web", "console", "unknown")
"""Device families; sources map their own device names onto these."""

# The landing record as sources write it: one JSON object per line.
LANDING_EVENT_FIELDS: tuple[str, ...] = (
    "event_id",
    "user_id",
    "title_id",
    "event_type",
    "event_ts",
    "watch_seconds",
    "position_seconds",
    "rating",
    "device",
    "country",
)
"""Keys of a landing event; ``event_ts`` is ISO-8601 UTC (``2026-01-01T20:15:00Z``) or epoch seconds."""

BRONZE_EVENTS = StructType(
    [
        StructField("event_id", StringType(), False),
        StructField("user_id", StringType(), False),
        StructField("title_id", StringType(), False),
        StructField("event_type", StringType(), False),
        StructField("event_ts", TimestampType(), False),
        StructField("watch_seconds", DoubleType(), True),
        StructField("position_seconds", DoubleType(), True),
        StructField("rating", DoubleType(), True),
        StructField("device", StringType(), True),
        StructField("country", StringType(), True),
        StructField("source_file", StringType(), False),
        StructField("ingested_at", TimestampType(), False),
        StructField("event_date", DateType(), False),
    ]
)

BRONZE_EVENTS_REJECTED = StructType(
    [
        StructField("raw", StringType(), True),
        StructField("raw_bytes", BinaryType(), True),
        StructField("reason", StringType(), False),
        StructField("source_file", StringType(), False),
        StructField("line_number", LongType(), False),
        StructField("ingested_at", TimestampType(), False),
        StructField("event_date", DateType(), False),
    ]
)
"""One row per rejected landing record. ``raw`` is the record as readable text (a JSON line as
received, bad bytes replaced by U+FFFD; a Parquet row as JSON). ``raw_bytes`` holds the exact bytes
of a line that is not valid UTF-8 (its line terminator excluded), so nothing received is lost; it
is null for every other row."""

BRONZE_TITLES = StructType(
    [
        StructField("title_id", StringType(), False),
        StructField("name", StringType(), True),
        StructField("genres", ArrayType(StringType()), True),
        StructField("release_date", DateType(), True),
        StructField("runtime_seconds", DoubleType(), True),
        StructField("maturity", StringType(), True),
        StructField("series_id", StringType(), True),
        StructField("season", IntegerType(), True),
        StructField("episode", IntegerType(), True),
    ]
)
"""The catalogue; one row per title. Landing title records use the same keys (dates as ISO strings)."""

SESSION_EVENTS = StructType(
    [
        *BRONZE_EVENTS.fields,
        StructField("session_id", StringType(), False),
        StructField("seq_in_session", IntegerType(), False),
    ]
)

SESSIONS = StructType(
    [
        StructField("session_id", StringType(), False),
        StructField("user_id", StringType(), False),
        StructField("start_ts", TimestampType(), False),
        StructField("end_ts", TimestampType(), False),
        StructField("n_events", LongType(), False),
        StructField("n_titles", LongType(), False),
        StructField("devices", ArrayType(StringType()), False),
        StructField("event_date", DateType(), False),
    ]
)
"""One row per session; ``event_date`` is the date the session started."""

ACTIONS: tuple[str, ...] = (
    "rated_high",
    "rated_low",
    "completed",
    "watched",
    "abandoned",
    "started",
    "listed",
    "impressed",
)
"""Token action summaries, in precedence order: a token takes the first that applies."""

INTERACTION_TOKENS = StructType(
    [
        StructField("user_id", StringType(), False),
        StructField("position", LongType(), False),
        StructField("title_id", StringType(), False),
        StructField("action", StringType(), False),
        StructField("watch_fraction_bucket", IntegerType(), False),
        StructField("gap_bucket", IntegerType(), False),
        StructField("device", StringType(), True),
        StructField("hour", IntegerType(), False),
        StructField("weekday", IntegerType(), False),
        StructField("session_id", StringType(), False),
        StructField("ts", TimestampType(), False),
        StructField("n_events", IntegerType(), False),
        StructField("event_date", DateType(), False),
    ]
)
"""One row per interaction token; ``position`` is 0-based over the member's whole history."""

MEMBER_POSITIONS = StructType(
    [
        StructField("user_id", StringType(), False),
        StructField("last_position", LongType(), False),
        StructField("last_ts", TimestampType(), False),
        StructField("event_date", DateType(), False),
    ]
)
"""Partition D: every member tokenised up to and including D, with the last position and its time.

Gold's bookkeeping: day D+1 continues positions from partition D instead of scanning every
earlier token partition."""

MODEL_TOKEN_COLUMNS: tuple[str, ...] = (
    "user_id",
    "position",
    "title_id",
    "action",
    "watch_fraction_bucket",
    "gap_bucket",
    "device",
    "hour",
    "weekday",
    "ts",
)
"""The ``gold/interaction_tokens`` columns the models train and evaluate on."""

SKIPPING_STATS: dict[str, tuple[str, ...]] = {
    "bronze/events": ("user_id", "title_id", "event_ts"),
    "bronze/events_rejected": ("reason",),
    "silver/session_events": ("user_id", "session_id", "event_ts"),
    "silver/sessions": ("user_id", "start_ts"),
    "gold/interaction_tokens": ("user_id", "title_id", "ts"),
    "gold/member_positions": ("user_id",),
}
"""The columns each day-partitioned table keeps Delta min/max statistics for (data skipping).

The columns readers filter on; statistics on every column (Delta's default, the first 32) cost
as much CPU as the Parquet write itself."""
