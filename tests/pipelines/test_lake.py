"""Partition-replacing Delta writes: re-runs replace, and new tables keep only the chosen statistics."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from pyspark.sql.types import DateType, LongType, StringType, StructField, StructType

from pipelines.lake import read_partitions, replace_partitions

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
