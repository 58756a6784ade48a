"""Reading and writing the Delta lake's day-partitioned tables, idempotently.

Every writer replaces exactly the partitions it owns (Delta ``replaceWhere``), so re-running a day
gives the same table instead of appending a second copy, and a killed run leaves the previous
version in place (a Delta commit is atomic).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructField, StructType

PARTITION_COLUMN = "event_date"


def table_exists(spark: SparkSession, path: str) -> bool:
    """True when ``path`` holds a Delta table (its ``_delta_log`` exists)."""
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, path)


def create_table(
    spark: SparkSession, path: str, schema: StructType, stats_columns: Sequence[str]
) -> None:
    """Create an empty day-partitioned Delta table that keeps statistics on ``stats_columns``."""
    from delta.tables import DeltaTable

    # Hadoop writes a URI with an empty authority as scheme:/path, and Delta refuses a location
    # spelt otherwise (file:///x and file:/x are "two different locations" to it).
    location = re.sub(r"^([A-Za-z][\w+.-]*):///", r"\1:/", path)
    (
        DeltaTable.createIfNotExists(spark)
        .location(location)
        # Nullable, as a first write would have made them: the contract's nullability is for readers.
        .addColumns(StructType([StructField(f.name, f.dataType, True) for f in schema.fields]))
        .partitionedBy(PARTITION_COLUMN)
        .property("delta.dataSkippingStatsColumns", ",".join(stats_columns))
        .execute()
    )


def replace_partitions(
    df: DataFrame,
    path: str,
    first_day: dt.date,
    last_day: dt.date | None = None,
    schema: StructType | None = None,
    stats_columns: Sequence[str] = (),
) -> None:
    """Overwrite the ``event_date`` partitions ``[first_day, last_day]`` of the table at ``path``.

    Rows outside the range make Delta fail the write, which is what we want: a writer that
    produces rows for a day it does not own is a bug, not something to store silently.
    A new table is created with ``schema`` and Delta statistics on ``stats_columns`` only.
    """
    last_day = last_day or first_day
    if schema is not None:
        df = df.select([F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])
        if stats_columns and not table_exists(df.sparkSession, path):
            create_table(df.sparkSession, path, schema, stats_columns)
    predicate = f"{PARTITION_COLUMN} >= '{first_day.isoformat()}' AND {PARTITION_COLUMN} <= '{last_day.isoformat()}'"
    (
        df.write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", predicate)
        .partitionBy(PARTITION_COLUMN)
        .save(path)
    )


def read_partitions(
    spark: SparkSession, path: str, first_day: dt.date, last_day: dt.date | None = None
) -> DataFrame | None:
    """The rows of partitions ``[first_day, last_day]``, or None when the table does not exist yet."""
    if not table_exists(spark, path):
        return None
    last_day = last_day or first_day
    return (
        spark.read.format("delta")
        .load(path)
        .where(F.col(PARTITION_COLUMN).between(F.lit(first_day), F.lit(last_day)))
    )


def read_upstream_day(
    spark: SparkSession, lake_root: str, layer: str, table: str, day: dt.date
) -> DataFrame:
    """The ``day`` partition of an upstream table, or a ``FileNotFoundError`` that says what to run."""
    rows = read_partitions(spark, f"{lake_root.rstrip('/')}/{layer}/{table}", day)
    if rows is None:
        raise FileNotFoundError(
            f"{layer}/{table} does not exist yet under {lake_root}: materialize it for {day} first."
        )
    return rows


def read_before(spark: SparkSession, path: str, day: dt.date) -> DataFrame | None:
    """The rows of every partition strictly before ``day``, or None when the table does not exist."""
    if not table_exists(spark, path):
        return None
    return spark.read.format("delta").load(path).where(F.col(PARTITION_COLUMN) < F.lit(day))


def last_commit_metrics(spark: SparkSession, path: str) -> dict[str, str]:
    """Operation metrics of the newest Delta commit (e.g. ``numOutputRows``), for asset metadata."""
    from delta.tables import DeltaTable

    row = DeltaTable.forPath(spark, path).history(1).select("version", "operationMetrics").first()
    metrics = dict(row["operationMetrics"] or {})
    metrics["delta_version"] = str(row["version"])
    return metrics


def detach(df: DataFrame) -> DataFrame:
    """``df`` computed now and kept in executor memory (spilling to disk) under a plan naming no table.

    Writing a table makes Spark recache every cached plan that reads it: a cached frame derived
    from a table the same step then writes (silver's previous-day tail of
    ``silver/session_events``, gold's ``gold/member_positions``) would be recomputed from scratch
    after the write, and with it every cache built on top of it (the day's sessionised events,
    the tokens). A detached frame keeps its rows whatever is written. Free it with ``release``.
    """
    return df.localCheckpoint(eager=True, storageLevel=StorageLevel.MEMORY_AND_DISK)


def release(df: DataFrame) -> None:
    """Drop the blocks of a ``detach``ed frame now, instead of whenever the JVM collects it."""
    jdf = getattr(df, "_jdf", None)  # Spark Connect: the server frees them with the session
    if jdf is None:
        return
    plan = jdf.logicalPlan()
    if plan.getClass().getSimpleName() == "LogicalRDD":
        rdd = plan.rdd()
        # SparkContext.unpersistRDD frees the blocks as RDD.unpersist does, without its warning
        # that a locally checkpointed RDD cannot be recomputed (nothing reads it afterwards).
        rdd.context().unpersistRDD(rdd.id(), False)


def _sql_literal(value: dt.date | dt.datetime) -> str:
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return f"TIMESTAMP'{value.isoformat(sep=' ')}'"
    if isinstance(value, dt.date):
        return f"DATE'{value.isoformat()}'"
    raise TypeError(f"run values are dates or timestamps, got {type(value).__name__}")


def with_run_values(df: DataFrame, **values: dt.date | dt.datetime) -> DataFrame:
    """``df`` with one column per keyword, the same value on every row, read from a one-row table.

    Spark writes a date or timestamp literal into the Java it generates for a query, so a query
    that differs from yesterday's only in its day is compiled anew (Janino, then HotSpot's
    compilers, competing with the tasks for the cores). Cross-joined from a one-row table
    (broadcast), the values are data, the generated code is the same every day and Spark's code
    cache (``spark.sql.codegen.cache.maxEntries``) serves it. Use it where a day's value meets every row; a filter that
    prunes partitions keeps its literal, since pruning needs to see the value. Naive datetimes
    are UTC (the session's time zone).
    """
    row = ", ".join(_sql_literal(value) for value in values.values())
    one_row = df.sparkSession.sql(
        f"SELECT * FROM VALUES ({row}) AS run_values({', '.join(values)})"
    )
    return df.crossJoin(F.broadcast(one_row))
