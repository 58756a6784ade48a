"""Parse raw landing lines with an explicit schema and classify each one: accepted, or a reason.

The rules here are the row-level form of the Great Expectations suite in ``validation.py``: Spark
computes one reason per rejected line (the first rule it breaks, in the order below) so that
every rejected record is kept with why, while GE certifies the accepted rows as a whole.

Typed Parquet rows (``landing.read_landing_parquet``) skip the parse: they go to
``classify_events`` as they are and get the same rules and reasons, less the ones only text can
break (``empty_line``, ``malformed_json``, ``wrong_type:*``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from pipelines.ingest.landing import LANDING_PARQUET_SCHEMA
from pipelines.lake import with_run_values
from pipelines.schemas import DEVICES, EVENT_TYPES, LANDING_EVENT_FIELDS

REQUIRED_FIELDS: tuple[str, ...] = ("event_id", "user_id", "title_id", "event_type", "event_ts")
"""Fields without which an event means nothing; a missing one rejects the line."""

NUMERIC_FIELDS: tuple[str, ...] = ("watch_seconds", "position_seconds", "rating")

# Every field is read as a string first, so a wrong type becomes a reason instead of a silent null.
_RAW_SCHEMA = StructType(
    [StructField(name, StringType(), True) for name in LANDING_EVENT_FIELDS]
    + [StructField("_corrupt", StringType(), True)]
)


@dataclass(frozen=True)
class IngestRules:
    """Thresholds of the event validation rules (one place; the Dagster config maps onto it)."""

    lateness_allowance_hours: float = 6.0
    """How long before the partition day an event may have happened and still be accepted (late arrival)."""
    max_duration_runtime_ratio: float = 1.5
    """watch/position seconds above this multiple of the title's runtime are rejected."""
    rating_min: float = 0.0
    """Smallest valid rating."""
    rating_max: float = 5.0
    """Largest valid rating."""
    max_reject_rate: float = 0.05
    """The blocking asset check fails when rejected / received exceeds this."""

    def __post_init__(self) -> None:
        if not 0 <= self.lateness_allowance_hours < 24:
            raise ValueError(
                "lateness_allowance_hours must be in [0, 24): sessionisation assumes a late event "
                f"belongs at most to the previous day, got {self.lateness_allowance_hours}"
            )


def parse_events(lines: DataFrame) -> DataFrame:
    """Typed columns plus ``_parsed_ok`` / raw string columns, one row per input line."""
    parsed = lines.withColumn(
        "_j",
        F.from_json(
            "raw", _RAW_SCHEMA, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt"}
        ),
    )
    typed = parsed.select(
        "*",
        *[F.col(f"_j.{name}").alias(f"_s_{name}") for name in LANDING_EVENT_FIELDS],
    )
    ts_text = F.col("_s_event_ts")
    # Only text without a ':' can be epoch seconds; ISO text would make the double cast throw
    # (and catch) an exception on every row, 5% of the whole ingestion's CPU.
    epoch = F.when(~ts_text.contains(":"), ts_text.try_cast("double"))
    event_ts = F.when(epoch.isNotNull(), F.timestamp_seconds(epoch)).otherwise(
        ts_text.try_cast("timestamp")
    )
    return typed.select(
        "*",
        F.col("_s_event_id").alias("event_id"),
        F.col("_s_user_id").alias("user_id"),
        F.col("_s_title_id").alias("title_id"),
        F.col("_s_event_type").alias("event_type"),
        event_ts.alias("event_ts"),
        *[F.col(f"_s_{name}").try_cast("double").alias(name) for name in NUMERIC_FIELDS],
        F.col("_s_device").alias("device"),
        F.col("_s_country").alias("country"),
    )


def _text_checks() -> list[tuple[str, Column]]:
    """The rules of a parsed JSON line (``parse_events``): the text, then each field's string."""
    raw_is_object = F.trim("raw").startswith("{")
    checks: list[tuple[str, Column]] = [
        ("empty_line", F.trim("raw") == ""),
        ("invalid_utf8", ~F.is_valid_utf8("raw")),
        (
            "malformed_json",
            F.col("_j").isNull() | F.col("_j._corrupt").isNotNull() | ~raw_is_object,
        ),
    ]
    checks += [(f"missing_field:{name}", F.col(f"_s_{name}").isNull()) for name in REQUIRED_FIELDS]
    checks += [
        (f"wrong_type:{name}", F.col(f"_s_{name}").isNotNull() & F.col(name).isNull())
        for name in (*NUMERIC_FIELDS, "event_ts")
    ]
    return checks


def _typed_checks() -> list[tuple[str, Column]]:
    """The rules of a typed row (Parquet): a missing field is a null; types are the file's.

    Parquet's string columns are not checked for UTF-8 on read (a producer can write any bytes
    as a string), so a row with a string that is not UTF-8 is rejected as a JSON line would be.
    """
    strings = [f.name for f in LANDING_PARQUET_SCHEMA.fields if isinstance(f.dataType, StringType)]
    all_valid = reduce(
        Column.__and__, [F.coalesce(F.is_valid_utf8(name), F.lit(True)) for name in strings]
    )
    return [("invalid_utf8", ~all_valid)] + [
        (f"missing_field:{name}", F.col(name).isNull()) for name in REQUIRED_FIELDS
    ]


def _reason_rules(
    rules: IngestRules, window: tuple[Column, Column], ingested_at: Column, from_text: bool = True
) -> list[tuple[str, Column]]:
    window_start, window_end = window
    checks = _text_checks() if from_text else _typed_checks()
    checks += [
        (f"empty_id:{name}", F.trim(F.col(name)) == "")
        for name in ("event_id", "user_id", "title_id")
    ]
    checks += [
        ("bad_enum:event_type", ~F.col("event_type").isin(*EVENT_TYPES)),
        ("bad_enum:device", F.col("device").isNotNull() & ~F.col("device").isin(*DEVICES)),
        ("missing_field:rating", (F.col("event_type") == "rate") & F.col("rating").isNull()),
        (
            "rating_out_of_range",
            F.col("rating").isNotNull()
            & ~F.col("rating").between(rules.rating_min, rules.rating_max),
        ),
        (
            "negative_duration",
            (F.col("watch_seconds") < 0) | (F.col("position_seconds") < 0),
        ),
        (
            "duration_exceeds_runtime",
            F.col("_runtime").isNotNull()
            & (
                F.greatest(
                    F.coalesce("watch_seconds", F.lit(0.0)),
                    F.coalesce("position_seconds", F.lit(0.0)),
                )
                > F.col("_runtime") * rules.max_duration_runtime_ratio
            ),
        ),
        ("ts_in_future", F.col("event_ts") > ingested_at),
        ("ts_outside_day", (F.col("event_ts") < window_start) | (F.col("event_ts") >= window_end)),
    ]
    return checks


DUPLICATE_REASON = "duplicate_event_id"
"""The reason of a later valid copy of an ``event_id`` (``reject_duplicates``)."""


def reason_names(rules: IngestRules | None = None) -> tuple[str, ...]:
    """Every reason a line can be rejected with, text and typed rules together, in rule order."""
    unknown = F.lit(None).cast("timestamp")
    names: list[str] = []
    for from_text in (True, False):
        for name, _ in _reason_rules(
            rules or IngestRules(), (unknown, unknown), unknown, from_text
        ):
            if name not in names:
                names.append(name)
    return (*names, DUPLICATE_REASON)


def classify_events(
    parsed: DataFrame,
    day: dt.date,
    rules: IngestRules,
    ingested_at: dt.datetime,
    runtimes: DataFrame | None = None,
) -> DataFrame:
    """Add ``reason`` (null = accepted) to every parsed line, by the row rules alone.

    ``parsed`` is ``parse_events``'s output (JSON lines) or typed rows with the landing fields
    (``landing.read_landing_parquet``: told apart by the parse's ``_j`` column), which skip the
    text rules. ``runtimes`` (``title_id``, ``runtime_seconds``) enables the duration rule; without
    a catalogue the rule is skipped rather than guessed. Duplicate ``event_id``s need the whole
    day, so they are found apart (``duplicate_event_ids`` then ``reject_duplicates``).
    """
    from_text = "_j" in parsed.columns
    day_start = dt.datetime.combine(day, dt.time.min)
    # The day's bounds and the ingestion time are a run value (lake.with_run_values), not
    # literals: the rules compile to the same code every day.
    parsed = with_run_values(
        parsed,
        _window_start=day_start - dt.timedelta(seconds=int(rules.lateness_allowance_hours * 3600)),
        _window_end=day_start + dt.timedelta(days=1),
        _ingested_at=ingested_at,
    )
    window = (F.col("_window_start"), F.col("_window_end"))
    if runtimes is not None:
        parsed = parsed.join(
            F.broadcast(runtimes.select("title_id", F.col("runtime_seconds").alias("_runtime"))),
            "title_id",
            "left",
        )
    else:
        parsed = parsed.withColumn("_runtime", F.lit(None).cast("double"))
    reason = F.lit(None).cast("string")
    for name, condition in reversed(_reason_rules(rules, window, F.col("_ingested_at"), from_text)):
        reason = F.when(F.coalesce(condition, F.lit(False)), F.lit(name)).otherwise(reason)
    return (
        parsed.withColumn("reason", reason)
        .withColumnRenamed("_ingested_at", "ingested_at")
        .drop("_window_start", "_window_end")
    )


_LINE = ("source_file", "_block", "_row")


def duplicate_event_ids(
    classified: DataFrame, accepted_before: DataFrame | None = None, day: dt.date | None = None
) -> DataFrame:
    """``event_id`` → ``_first`` (file, block, row of its first valid copy), for ids valid more than once.

    A count per id first (a hash aggregate: only ids are shuffled, never rows, and nothing is
    sorted), then the first copy is picked among the few rows of duplicated ids only. Only valid
    rows compete, so a broken earlier copy never evicts a good one.

    ``accepted_before`` (the previous day's ``bronze/events``) catches an event re-sent a day
    later: a late valid row (``event_ts`` before ``day``) whose id that day already accepted.
    Its first copy is the previous day's (``_first`` is ``("", -1, -1)``, before every line), so
    every copy of it in this day is a duplicate. Only the late rows' ids are looked up.
    """
    valid = classified.where(F.col("reason").isNull())
    repeated = valid.groupBy("event_id").count().where(F.col("count") > 1).select("event_id")
    copies = valid.join(F.broadcast(repeated), "event_id", "left_semi")
    found = copies.groupBy("event_id").agg(F.min(F.struct(*_LINE)).alias("_first"))
    if accepted_before is None or day is None:
        return found
    late = with_run_values(valid, _day_start=dt.datetime.combine(day, dt.time.min)).where(
        F.col("event_ts") < F.col("_day_start")
    )
    resent = accepted_before.select("event_id").join(
        late.select("event_id"), "event_id", "left_semi"
    )
    earlier_day = F.struct(
        F.lit("").alias("source_file"),
        F.lit(-1).cast("long").alias("_block"),
        F.lit(-1).cast("long").alias("_row"),
    )
    return (
        found.unionByName(resent.select("event_id", earlier_day.alias("_first")))
        .groupBy("event_id")
        .agg(F.min("_first").alias("_first"))
    )


def reject_duplicates(
    classified: DataFrame, duplicates: DataFrame, broadcast: bool = False
) -> DataFrame:
    """Reject every valid copy of a duplicated ``event_id`` but the first (by file, then line).

    A copy of an id the previous day accepted has no first copy in this day: all are rejected.
    ``broadcast``: join ``duplicates`` as a broadcast table (the caller knows it is small);
    otherwise Spark chooses from its size estimate.
    """
    later_copy = (
        F.col("reason").isNull()
        & F.col("_first").isNotNull()
        & (F.struct(*_LINE) != F.col("_first"))
    )
    return (
        classified.join(F.broadcast(duplicates) if broadcast else duplicates, "event_id", "left")
        .withColumn(
            "reason", F.when(later_copy, F.lit(DUPLICATE_REASON)).otherwise(F.col("reason"))
        )
        .drop("_first")
    )
