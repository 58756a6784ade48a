"""Land one day of raw events in ``bronze/events`` and ``bronze/events_rejected``.

One pass parses and classifies every line; the result is persisted so that the accepted write,
the rejected write (line numbers included), the counts and the Great Expectations run do not
re-read the JSON. Both
tables replace exactly the day's partition, so a re-run replaces instead of duplicating, and
``accepted + rejected == received`` is checked before the function returns.

A day's folder may hold JSON lines (``.jsonl``/``.json``), typed Parquet (``.parquet``) or both:
each format is read its own way (text parsed with an explicit schema; Parquet rows as they are)
and classified by the same rules into the same cached frame. A rejected Parquet row is kept as
its JSON (``to_json`` of the landing fields, nulls written out) with its 1-based row number in
the file as ``line_number``; so is a later copy of a duplicated ``event_id`` (its text was
dropped from the cache before duplicates were known). A rejected line that is not valid UTF-8
keeps its exact bytes in ``raw_bytes`` (``raw`` shows it with U+FFFD in place of the bad bytes).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from pipelines.ingest.landing import (
    LANDING_PARQUET_SCHEMA,
    LandingFiles,
    attach_line_numbers,
    list_landing_files,
    read_landing_lines,
    read_landing_parquet,
)
from pipelines.ingest.rules import (
    IngestRules,
    classify_events,
    duplicate_event_ids,
    parse_events,
    reason_names,
    reject_duplicates,
)
from pipelines.ingest.validation import (
    ValidationOutcome,
    validate_accepted_witness,
    witness_aggregates,
)
from pipelines.lake import (
    detach,
    last_commit_metrics,
    read_partitions,
    release,
    replace_partitions,
    table_exists,
    with_run_values,
)
from pipelines.schemas import BRONZE_EVENTS, BRONZE_EVENTS_REJECTED, SKIPPING_STATS
from pipelines.settings import Settings

MAX_BROADCAST_DUPLICATES = 200_000
"""Duplicated ids joined back as a broadcast table up to this many (about 30 MB); more (a
whole file sent twice) are joined by a shuffle."""


@dataclass(frozen=True)
class IngestReport:
    """Counts of one day's ingestion; ``received == accepted + rejected`` always holds."""

    day: dt.date
    files: int
    received: int
    accepted: int
    rejected: int
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    validation: ValidationOutcome | None = None

    @property
    def reject_rate(self) -> float:
        return self.rejected / self.received if self.received else 0.0

    def as_metadata(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "received": self.received,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "reject_rate": round(self.reject_rate, 6),
            "rejects_by_reason": dict(sorted(self.rejects_by_reason.items())),
            "ge_success": self.validation.success if self.validation else None,
            "ge_expectations": self.validation.evaluated if self.validation else 0,
        }


def _catalogue_runtimes(spark: SparkSession, settings: Settings) -> DataFrame | None:
    path = settings.table_path("bronze", "titles")
    if not table_exists(spark, path):
        return None
    return spark.read.format("delta").load(path).select("title_id", "runtime_seconds")


def ingest_events_day(
    spark: SparkSession,
    settings: Settings,
    day: dt.date,
    rules: IngestRules,
    files: LandingFiles | None = None,
    ingested_at: dt.datetime | None = None,
) -> IngestReport:
    """Parse, validate, dedupe and write one landing day; returns the counts.

    Raises ``FileNotFoundError`` when the day has no landing folder and ``RuntimeError`` when the
    GE suite fails on rows the rules accepted (nothing is written in that case).
    """
    files = files or list_landing_files(settings.landing_path("events", day.isoformat()))
    if not files.paths:
        raise FileNotFoundError(
            f"Landing folder {files.folder} holds no .jsonl, .json or .parquet files for {day}."
        )
    ingested_at = ingested_at or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    runtimes = _catalogue_runtimes(spark, settings)
    # Cache only what the counts, GE and both writes read: the parsed JSON struct and its string
    # columns never reach the cache, and accepted rows drop their raw text. Every line keeps its
    # position, so line numbers come from here, not from a second read of the files.
    keep = [F.col(f.name) for f in BRONZE_EVENTS.fields if f.name != "event_date"]
    parts: list[DataFrame] = []
    if files.jsonl:
        lines = classify_events(
            parse_events(read_landing_lines(spark, files.jsonl)), day, rules, ingested_at, runtimes
        )
        parts.append(
            lines.select(
                *keep,
                F.when(F.col("reason").isNotNull(), F.col("raw")).alias("raw"),
                "reason",
                "_block",
                "_row",
            )
        )
    if files.parquet:
        rows = classify_events(
            read_landing_parquet(spark, files.parquet), day, rules, ingested_at, runtimes
        )
        # No text to keep: a rejected row's JSON is built from its cached fields when written.
        parts.append(
            rows.select(*keep, F.lit(None).cast("string").alias("raw"), "reason", "_block", "_row")
        )
    classified = parts[0]
    for part in parts[1:]:
        classified = classified.unionByName(part)
    classified = classified.persist(StorageLevel.MEMORY_AND_DISK)
    cached, detached = [classified], []
    try:
        # Ids the previous day accepted count as earlier copies of this day's late rows.
        accepted_before = read_partitions(
            spark, settings.table_path("bronze", "events"), day - dt.timedelta(days=1)
        )
        # Detached (lake.detach), not cached: it reads bronze/events, which is written below,
        # and a write recomputes every cache that reads the written table. Computing it is the
        # first action: it also fills the cache of `classified`.
        duplicates = detach(duplicate_event_ids(classified, accepted_before, day))
        detached.append(duplicates)
        n_duplicates = duplicates.count()
        if n_duplicates:
            # A local checkpoint's size estimate is its plan's guess, not its row count, so
            # without the hint every pass below (counts, both writes, line numbers) shuffled
            # the whole day to join a few ids. Shuffled only when a whole file was re-sent.
            classified = reject_duplicates(
                classified, duplicates, broadcast=n_duplicates <= MAX_BROADCAST_DUPLICATES
            )
        # One pass over the cache: the count of every reason and the values GE's suite is
        # decided by (validation.witness_aggregates), instead of a job per expectation.
        is_accepted = F.col("reason").isNull()
        names = reason_names(rules)
        stats = classified.agg(
            F.count(F.lit(1)).alias("_received"),
            F.count_if(is_accepted).alias("_accepted"),
            *[F.count_if(F.col("reason") == name).alias(f"_r{i}") for i, name in enumerate(names)],
            *witness_aggregates(is_accepted),
        ).first()
        by_reason = {name: stats[f"_r{i}"] for i, name in enumerate(names) if stats[f"_r{i}"]}
        accepted_count, received = stats["_accepted"], stats["_received"]
        if accepted_count + sum(by_reason.values()) != received:  # a reason reason_names lacks
            by_reason = {
                row["reason"]: row["count"]
                for row in classified.where(~is_accepted).groupBy("reason").count().collect()
            }

        accepted = with_run_values(classified.where(is_accepted), event_date=day)
        accepted = accepted.select([F.col(f.name) for f in BRONZE_EVENTS.fields])
        validation = validate_accepted_witness(stats.asDict(), accepted_count, accepted, day, rules)
        if not validation.success:
            raise RuntimeError(
                f"Great Expectations failed on rows the ingestion rules accepted for {day}: "
                f"{', '.join(validation.failed_expectations)}. The rules and the suite disagree; "
                "nothing was written."
            )
        # A line's text as received; a Parquet row or a later duplicate (whose text was not
        # cached): its landing fields as JSON, nulls written out.
        as_json = F.to_json(
            F.struct(*LANDING_PARQUET_SCHEMA.fieldNames()), {"ignoreNullFields": "false"}
        )
        # Only rejected rows reach here: the one check and copy below cost nothing per accepted row.
        rejected = classified.where(F.col("reason").isNotNull()).select(
            F.coalesce(F.make_valid_utf8("raw"), as_json).alias("raw"),
            # A line that is not UTF-8 keeps its exact bytes (Spark's text reader leaves a line's
            # bytes as they are; the cast to binary copies them); null for every other row.
            F.when(~F.is_valid_utf8("raw"), F.col("raw").cast("binary")).alias("raw_bytes"),
            "reason",
            "source_file",
            "_block",
            "_row",
            "ingested_at",
        )
        if files.jsonl:
            rejected = attach_line_numbers(rejected, classified)
        else:  # Parquet alone: the row index is the line number, no count per split needed
            rejected = rejected.withColumn("line_number", F.col("_row") + 1)
        rejected = with_run_values(rejected, event_date=day)
        replace_partitions(
            accepted,
            settings.table_path("bronze", "events"),
            day,
            schema=BRONZE_EVENTS,
            stats_columns=SKIPPING_STATS["bronze/events"],
        )
        rejected_path = settings.table_path("bronze", "events_rejected")
        _add_missing_columns(spark, rejected_path, BRONZE_EVENTS_REJECTED)
        replace_partitions(
            rejected,
            rejected_path,
            day,
            schema=BRONZE_EVENTS_REJECTED,
            stats_columns=SKIPPING_STATS["bronze/events_rejected"],
        )
    finally:
        for frame in cached:
            frame.unpersist()
        for frame in detached:
            release(frame)

    report = IngestReport(
        day=day,
        files=len(files.paths),
        received=received,
        accepted=accepted_count,
        rejected=sum(by_reason.values()),
        rejects_by_reason=by_reason,
        validation=validation,
    )
    _check_nothing_lost(spark, settings, report)
    return report


def _add_missing_columns(spark: SparkSession, path: str, schema: StructType) -> None:
    """Add to an existing table the nullable columns of ``schema`` it predates (e.g. ``raw_bytes``).

    A lake written before a column joined the contract would otherwise fail the day's write with
    a schema mismatch; older partitions read the new column as null. Reads only the Delta log.
    """
    if not table_exists(spark, path):
        return
    have = set(spark.read.format("delta").load(path).columns)
    previous = None
    for f in schema.fields:
        if f.name not in have:
            if not f.nullable:
                raise RuntimeError(
                    f"Delta table {path} lacks the non-nullable column {f.name!r} of its contract."
                )
            place = f" AFTER {previous}" if previous else " FIRST"
            spark.sql(
                f"ALTER TABLE delta.`{path}` ADD COLUMNS ({f.name} {f.dataType.simpleString()}"
                f"{place})"
            )
        previous = f.name


def _check_nothing_lost(spark: SparkSession, settings: Settings, report: IngestReport) -> None:
    """Check what Delta committed for the day against the counts: a mismatch is a bug.

    The rows each write committed (its commit's ``numOutputRows``: the whole partition, as the
    write replaced it) are read from the Delta log; a table whose commits carry no metrics is
    re-counted instead.
    """
    stored = {}
    for name in ("events", "events_rejected"):
        path = settings.table_path("bronze", name)
        written = last_commit_metrics(spark, path).get("numOutputRows")
        stored[name] = (
            int(written)
            if written is not None
            else read_partitions(spark, path, report.day).count()
        )
    if stored["events"] != report.accepted or stored["events_rejected"] != report.rejected:
        raise RuntimeError(
            f"Row accounting broke for {report.day}: received {report.received}, "
            f"classified {report.accepted} accepted / {report.rejected} rejected, "
            f"but Delta holds {stored['events']} / {stored['events_rejected']}."
        )
