"""Bad input lands in ``bronze/events_rejected`` with its reason, good input in ``bronze/events``."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from pipelines.ingest.bronze import ingest_events_day
from pipelines.ingest.rules import IngestRules
from pipelines.lake import create_table, read_partitions
from pipelines.schemas import BRONZE_EVENTS_REJECTED

DAY = dt.date(2026, 1, 2)


def _event(event_id: str, **overrides) -> dict:
    record = {
        "event_id": event_id,
        "user_id": "u1",
        "title_id": "t1",
        "event_type": "play_start",
        "event_ts": "2026-01-02T10:00:00.000Z",
        "watch_seconds": 10.0,
        "position_seconds": 10.0,
        "rating": None,
        "device": "tv",
        "country": "GB",
    }
    record.update(overrides)
    return record


def _line(record: dict) -> bytes:
    return json.dumps(record).encode() + b"\n"


# (line bytes, expected reason or None). Line numbers are the 1-based positions in this list.
BAD_FILE: list[tuple[bytes, str | None]] = [
    (_line(_event("good-1")), None),
    (b'{"event_id": "broken", "user_id": \n', "malformed_json"),
    (
        _line({k: v for k, v in _event("no-user").items() if k != "user_id"}),
        "missing_field:user_id",
    ),
    (_line(_event("wrong-type", watch_seconds="abc")), "wrong_type:watch_seconds"),
    (_line(_event("negative", watch_seconds=-5.0)), "negative_duration"),
    (_line(_event("too-old", event_ts="2025-12-01T10:00:00Z")), "ts_outside_day"),
    (_line(_event("future", event_ts="2099-01-01T00:00:00Z")), "ts_in_future"),
    (_line(_event("good-2", event_type="complete")), None),
    (_line(_event("good-2", event_type="play_stop")), "duplicate_event_id"),
    (b'{"event_id": "utf", "user_id": "u\xff\xfe1"}\n', "invalid_utf8"),
    (_line(_event("bad-enum", event_type="teleport")), "bad_enum:event_type"),
    (_line(_event("empty-user", user_id="  ")), "empty_id:user_id"),
    (_line(_event("late-ok", event_ts="2026-01-01T22:00:00Z")), None),
    (_line(_event("epoch-ok", event_ts=1767355200)), None),
    (_line(_event("rating-high", event_type="rate", rating=9.0)), "rating_out_of_range"),
    (b"[1, 2, 3]\n", "malformed_json"),
]


def _write_day(landing_root: Path) -> Path:
    folder = landing_root / "events" / f"date={DAY.isoformat()}"
    folder.mkdir(parents=True)
    (folder / "part-00000.jsonl").write_bytes(b"".join(line for line, _ in BAD_FILE))
    # A second, clean file: a broken first file must not stop it.
    (folder / "part-00001.jsonl").write_bytes(
        b"".join(_line(_event(f"clean-{i}", user_id=f"u{i}")) for i in range(5))
    )
    return folder


@pytest.mark.parametrize("join", ["broadcast", "shuffle"])
def test_every_bad_record_is_kept_with_its_reason_and_line(spark, settings, monkeypatch, join):
    # Duplicates are joined back by broadcast when few, by a shuffle when a whole file was re-sent.
    if join == "shuffle":
        monkeypatch.setattr("pipelines.ingest.bronze.MAX_BROADCAST_DUPLICATES", 0)
    _write_day(Path(settings.landing_root))
    report = ingest_events_day(spark, settings, DAY, IngestRules())

    expected_good = sum(1 for _, reason in BAD_FILE if reason is None) + 5
    assert report.received == len(BAD_FILE) + 5
    assert report.accepted == expected_good
    assert report.accepted + report.rejected == report.received
    assert report.validation is not None and report.validation.success

    rejected = read_partitions(spark, settings.table_path("bronze", "events_rejected"), DAY)
    got = {
        (row["line_number"], row["reason"])
        for row in rejected.where(F.col("source_file").endswith("part-00000.jsonl")).collect()
    }
    want = {(i + 1, reason) for i, (_, reason) in enumerate(BAD_FILE) if reason is not None}
    assert got == want
    # Every rejected line keeps its text; a later duplicate (not cached as text) its fields as JSON.
    raws = {row["line_number"]: row["raw"] for row in rejected.collect()}
    assert all(raw is not None for raw in raws.values())
    assert raws[2] == BAD_FILE[1][0].decode().rstrip("\n")
    duplicate = json.loads(raws[9])
    assert (duplicate["event_id"], duplicate["event_type"]) == ("good-2", "play_stop")
    # The line that is not UTF-8: readable in `raw`, its exact bytes in `raw_bytes`; every other
    # rejected row has no bytes column.
    invalid = BAD_FILE[9][0]
    raw_bytes = {
        row["line_number"]: row["raw_bytes"]
        for row in rejected.where(F.col("source_file").endswith("part-00000.jsonl")).collect()
    }
    assert bytes(raw_bytes.pop(10)) == invalid.rstrip(b"\n")
    assert raws[10] == invalid.rstrip(b"\n").decode("utf-8", errors="replace")
    assert all(value is None for value in raw_bytes.values())

    accepted = read_partitions(spark, settings.table_path("bronze", "events"), DAY)
    ids = sorted(row["event_id"] for row in accepted.select("event_id").collect())
    assert ids == sorted(
        ["good-1", "good-2", "late-ok", "epoch-ok"] + [f"clean-{i}" for i in range(5)]
    )
    # The first copy of a duplicated event_id wins.
    assert accepted.where("event_id = 'good-2'").first()["event_type"] == "complete"
    epoch = accepted.where("event_id = 'epoch-ok'").first()["event_ts"]
    assert epoch == dt.datetime(2026, 1, 2, 12, 0, 0)


def test_a_rejected_table_written_before_raw_bytes_gets_the_column(spark, settings):
    """A lake whose ``bronze/events_rejected`` predates ``raw_bytes`` takes the column on write."""
    older = StructType([f for f in BRONZE_EVENTS_REJECTED.fields if f.name != "raw_bytes"])
    path = settings.table_path("bronze", "events_rejected")
    create_table(spark, path, older, ("reason",))
    _write_day(Path(settings.landing_root))
    ingest_events_day(spark, settings, DAY, IngestRules())
    rejected = read_partitions(spark, path, DAY)
    assert rejected.columns == BRONZE_EVENTS_REJECTED.fieldNames()
    kept = rejected.where(F.col("raw_bytes").isNotNull()).collect()
    assert [bytes(row["raw_bytes"]) for row in kept] == [BAD_FILE[9][0].rstrip(b"\n")]


def test_rerun_replaces_the_partition(spark, settings):
    _write_day(Path(settings.landing_root))
    first = ingest_events_day(spark, settings, DAY, IngestRules())
    second = ingest_events_day(spark, settings, DAY, IngestRules())
    assert (first.accepted, first.rejected) == (second.accepted, second.rejected)
    stored = read_partitions(spark, settings.table_path("bronze", "events"), DAY).count()
    assert stored == first.accepted


def test_missing_landing_folder_says_what_to_do(spark, settings):
    with pytest.raises(FileNotFoundError, match="generate or import data"):
        ingest_events_day(spark, settings, DAY, IngestRules())


def test_an_event_resent_the_next_day_is_a_duplicate(spark, settings):
    """Accepted on D-1, re-sent late on D: rejected on D as ``duplicate_event_id``, counts still add up."""
    previous = DAY - dt.timedelta(days=1)
    days = {
        previous: [_event("sent-twice", event_ts="2026-01-01T20:00:00Z"), _event("only-d1")],
        DAY: [
            _event("sent-twice", event_ts="2026-01-01T20:00:00Z"),
            _event("sent-twice", event_ts="2026-01-01T20:00:00Z", event_type="play_stop"),
            _event("late-new", event_ts="2026-01-01T21:00:00Z"),
            _event("fresh"),
        ],
    }
    days[previous][1]["event_ts"] = "2026-01-01T10:00:00Z"
    for day, records in days.items():
        folder = Path(settings.landing_root) / "events" / f"date={day.isoformat()}"
        folder.mkdir(parents=True)
        (folder / "part-00000.jsonl").write_bytes(b"".join(_line(r) for r in records))
    first_day = ingest_events_day(spark, settings, previous, IngestRules())
    assert (first_day.accepted, first_day.rejected) == (2, 0)

    for _ in range(2):  # a re-run gives the same day
        report = ingest_events_day(spark, settings, DAY, IngestRules())
        assert (report.received, report.accepted, report.rejected) == (4, 2, 2)
        assert report.rejects_by_reason == {"duplicate_event_id": 2}
        accepted = read_partitions(spark, settings.table_path("bronze", "events"), DAY)
        assert sorted(r["event_id"] for r in accepted.collect()) == ["fresh", "late-new"]
        rejected = read_partitions(spark, settings.table_path("bronze", "events_rejected"), DAY)
        assert sorted((r["line_number"], r["reason"]) for r in rejected.collect()) == [
            (1, "duplicate_event_id"),
            (2, "duplicate_event_id"),
        ]
    # The previous day keeps its copy.
    kept = read_partitions(spark, settings.table_path("bronze", "events"), previous)
    assert kept.where("event_id = 'sent-twice'").count() == 1
