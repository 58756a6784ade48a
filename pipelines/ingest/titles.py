"""Upsert the catalogue snapshot of a day into ``bronze/titles``.

The catalogue is current state, not a log: a source drops the titles it knows on a day, and the
table keeps one row per ``title_id`` (an upsert: the snapshot's rows win, titles it no longer lists
stay), so re-running a day changes nothing and a title that appears later (a new release) is
added without touching the others.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from pipelines import storage
from pipelines.lake import last_commit_metrics, table_exists
from pipelines.schemas import BRONZE_TITLES
from pipelines.settings import Settings

_LANDING_TITLES = StructType(
    [
        StructField(f.name, StringType() if f.name == "release_date" else f.dataType, True)
        for f in BRONZE_TITLES.fields
    ]
)


@dataclass(frozen=True)
class TitlesReport:
    """What one catalogue upsert did."""

    snapshot_day: dt.date
    received: int
    rejected: int
    table_rows: int


def latest_snapshot_folder(settings: Settings, day: dt.date) -> tuple[dt.date, str]:
    """The newest ``titles/date=...`` landing folder on or before ``day``."""
    root = storage.join(settings.landing_root, "titles")
    days = sorted(
        dt.date.fromisoformat(entry.name.removeprefix("date="))
        for entry in (storage.list_folder(root) if storage.is_dir(root) else [])
        if entry.is_dir and entry.name.startswith("date=")
    )
    eligible = [d for d in days if d <= day]
    if not eligible:
        raise FileNotFoundError(
            f"No catalogue snapshot under {root} on or before {day}: a source must drop "
            "titles.jsonl in titles/date=YYYY-MM-DD/ (the synthetic generator and the MovieLens importer do)."
        )
    return eligible[-1], settings.landing_path("titles", eligible[-1].isoformat())


def read_titles_snapshot(spark: SparkSession, folder: str) -> DataFrame:
    """Parse a snapshot with the catalogue schema; rows without a ``title_id`` are dropped (and counted)."""
    raw = spark.read.schema(_LANDING_TITLES).json(folder)
    return raw.withColumn("release_date", F.to_date("release_date"))


def _snapshot_marker(snapshot_day: dt.date, folder: str) -> str:
    files = sorted(
        f"{entry.name}@{entry.modified}"
        for entry in storage.list_folder(folder)
        if not entry.name.startswith((".", "_"))
    )
    return f"titles_snapshot={snapshot_day.isoformat()};files={','.join(files)}"


def _last_commit_marker(spark: SparkSession, path: str) -> str | None:
    from delta.tables import DeltaTable

    return DeltaTable.forPath(spark, path).history(1).first()["userMetadata"]


def upsert_titles(spark: SparkSession, settings: Settings, day: dt.date) -> TitlesReport:
    """Upsert the latest snapshot on or before ``day`` into ``bronze/titles``."""
    snapshot_day, folder = latest_snapshot_folder(settings, day)
    path = settings.table_path("bronze", "titles")
    # Daily runs mostly see the same snapshot again: skip the write when the newest commit
    # already came from this exact snapshot (same folder, same files, same modification times).
    marker = _snapshot_marker(snapshot_day, folder)
    if table_exists(spark, path) and _last_commit_marker(spark, path) == marker:
        rows = spark.read.format("delta").load(path).count()
        return TitlesReport(snapshot_day=snapshot_day, received=0, rejected=0, table_rows=rows)
    snapshot = read_titles_snapshot(spark, folder).persist()
    try:
        valid = snapshot.where(F.col("title_id").isNotNull() & (F.trim("title_id") != ""))
        valid = valid.dropDuplicates(["title_id"]).select(
            [F.col(f.name).cast(f.dataType) for f in BRONZE_TITLES.fields]
        )
        received = snapshot.count()
        accepted = valid.count()
        if table_exists(spark, path):
            # A catalogue is small: writing the merged state (this snapshot, plus the titles it no
            # longer lists) in one overwrite costs one job, where a MERGE costs several.
            stored = spark.read.format("delta").load(path)
            valid = valid.unionByName(
                stored.join(valid.select("title_id"), "title_id", "left_anti")
            )
        spark.conf.set("spark.databricks.delta.commitInfo.userMetadata", marker)
        try:
            valid.write.format("delta").mode("overwrite").save(path)
        finally:
            spark.conf.unset("spark.databricks.delta.commitInfo.userMetadata")
    finally:
        snapshot.unpersist()
    return TitlesReport(
        snapshot_day=snapshot_day,
        received=received,
        rejected=received - accepted,
        table_rows=int(last_commit_metrics(spark, path)["numOutputRows"]),
    )
