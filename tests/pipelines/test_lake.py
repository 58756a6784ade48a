"""Partition-replacing Delta writes: re-runs replace, and new tables keep only the chosen statistics;
a day's values reach generated code as data (``with_run_values``), so a new day compiles nothing."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from pyspark.sql import Row
from pyspark.sql import functions as F
from pyspark.sql.types import DateType, LongType, StringType, StructField, StructType

from pipelines.lake import read_partitions, replace_partitions, with_run_values

SCHEMA = StructType(
    [
        StructField("user_id", StringType(), False),
        StructField("n", LongType(), True),
        StructField("event_date", DateType(), False),
    ]
)
DAY = dt.date(2026, 1, 1)


def _stats_of_added_files(path: Path) -> list[dict]:
    stats = []
    for commit in sorted((path / "_delta_log").glob("*.json")):
        for line in commit.read_text().splitlines():
            action = json.loads(line)
            if "add" in action and action["add"].get("stats"):
                stats.append(json.loads(action["add"]["stats"]))
    return stats


def test_rerun_replaces_the_day_and_statistics_cover_only_the_chosen_columns(spark, tmp_path):
    path = tmp_path / "table"
    rows = [("u1", 1, DAY), ("u2", 2, DAY)]
    for _ in range(2):  # the second write is a re-run of the same day
        replace_partitions(
            spark.createDataFrame(rows, SCHEMA),
            str(path),
            DAY,
            schema=SCHEMA,
            stats_columns=("user_id",),
        )
    assert read_partitions(spark, str(path), DAY).count() == 2
    stats = _stats_of_added_files(path)
    assert stats, "Delta wrote no statistics at all"
    for file_stats in stats:
        assert set(file_stats["minValues"]) == {"user_id"}
        assert set(file_stats["nullCount"]) == {"user_id"}


def _classes_compiled(spark) -> int:
    """Spark's codegen cache misses so far in this JVM (each one a Janino compile)."""
    metrics = spark.sparkContext._jvm.org.apache.spark.metrics.source.CodegenMetrics
    return int(metrics.METRIC_COMPILATION_TIME().getCount())


def test_run_values_keep_a_days_values_out_of_the_generated_code(spark):
    # 50 hourly events from 2026-01-01 00:00 UTC: 24 on each of the first two days, 2 on the third.
    events = spark.range(50).select(
        F.timestamp_seconds(F.col("id") * 3600 + 1767225600).alias("ts"), "id"
    )

    def per_day(day: dt.date, as_literals: bool) -> list[Row]:
        start = dt.datetime.combine(day, dt.time.min)
        bounds = {"_start": start, "_end": start + dt.timedelta(days=1), "event_date": day}
        if as_literals:
            framed = events.select("*", *[F.lit(v).alias(k) for k, v in bounds.items()])
        else:
            framed = with_run_values(events, **bounds)
        in_day = (F.col("ts") >= F.col("_start")) & (F.col("ts") < F.col("_end"))
        return framed.where(in_day).groupBy("event_date").agg(F.sum("id").alias("ids")).collect()

    assert per_day(DAY, as_literals=False) == [Row(event_date=DAY, ids=sum(range(24)))]
    before = _classes_compiled(spark)
    next_day = DAY + dt.timedelta(days=1)
    assert per_day(next_day, as_literals=False) == [
        Row(event_date=next_day, ids=sum(range(24, 48)))
    ]
    assert _classes_compiled(spark) == before, "the second day compiled new code"

    # The same query with the days as literals compiles anew for each day: the check can fail.
    per_day(DAY, as_literals=True)
    before = _classes_compiled(spark)
    assert per_day(next_day, as_literals=True) == [Row(event_date=next_day, ids=sum(range(24, 48)))]
    assert _classes_compiled(spark) > before
