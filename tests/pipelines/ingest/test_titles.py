"""The catalogue upsert: one row per title, new releases added, unchanged snapshots skipped."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from delta.tables import DeltaTable

from pipelines.ingest.titles import upsert_titles


def _write_snapshot(settings, day: str, titles: list[dict]) -> None:
    folder = Path(settings.landing_path("titles", day))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "titles.jsonl").write_text("\n".join(json.dumps(t) for t in titles) + "\n")


def _title(title_id: str, name: str) -> dict:
    return {
        "title_id": title_id,
        "name": name,
        "genres": ["Drama"],
        "release_date": "2025-12-01",
        "runtime_seconds": 5400.0,
    }


def test_upsert_adds_new_titles_updates_old_and_skips_repeats(spark, settings):
    _write_snapshot(
        settings, "2026-01-01", [_title("t1", "One"), _title("t2", "Two"), {"name": "no id"}]
    )
    first = upsert_titles(spark, settings, dt.date(2026, 1, 1))
    assert (first.received, first.rejected, first.table_rows) == (3, 1, 2)

    # Day 2 has no new snapshot: the same one is seen again and nothing is committed.
    path = settings.table_path("bronze", "titles")
    version = DeltaTable.forPath(spark, path).history(1).first()["version"]
    again = upsert_titles(spark, settings, dt.date(2026, 1, 2))
    assert again.table_rows == 2
    assert DeltaTable.forPath(spark, path).history(1).first()["version"] == version

    _write_snapshot(settings, "2026-01-03", [_title("t1", "One (renamed)"), _title("t3", "Three")])
    third = upsert_titles(spark, settings, dt.date(2026, 1, 3))
    assert third.table_rows == 3
    names = {r["title_id"]: r["name"] for r in spark.read.format("delta").load(path).collect()}
    assert names == {"t1": "One (renamed)", "t2": "Two", "t3": "Three"}
