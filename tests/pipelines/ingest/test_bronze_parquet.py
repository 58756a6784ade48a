"""Parquet landing files: same rules and reasons as JSON lines, nothing lost, formats can mix.

Real Spark + Delta on tiny data: a hand-written Parquet day with every kind of bad row a typed
file can carry, then generator days of one seed written as JSONL, as Parquet and as a mix.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from pipelines.ingest.bronze import ingest_events_day
from pipelines.ingest.landing import LANDING_PARQUET_SCHEMA, list_landing_files
from pipelines.ingest.rules import IngestRules
from pipelines.lake import read_partitions
from pipelines.settings import Settings
from pipelines.sources.bad_records import EXPECTED_REASONS, PARQUET_BAD_KINDS
from pipelines.sources.synthetic import PRESETS, generate, landing_parquet_schema

DAY = dt.date(2026, 1, 2)
INGESTED_AT = dt.datetime(2026, 1, 3, 2, 0)  # the nightly run: "future" is fixed, not today
UTC = dt.UTC


def _event(event_id: str | None, **overrides) -> dict:
    record = {
        "event_id": event_id,
        "user_id": "u1",
        "title_id": "t1",
        "event_type": "play_start",
        "event_ts": dt.datetime(2026, 1, 2, 10, 0, tzinfo=UTC),
        "watch_seconds": 10.0,
        "position_seconds": 10.0,
        "rating": None,
        "device": "tv",
        "country": "GB",
    }
    record.update(overrides)
    return record


# (row, expected reason or None). Line numbers are the 1-based row positions in this list.
BAD_ROWS: list[tuple[dict, str | None]] = [
    (_event("good-1"), None),
    (_event(None), "missing_field:event_id"),
    (_event("no-user", user_id=None), "missing_field:user_id"),
    (_event("no-title", title_id=None), "missing_field:title_id"),
    (_event("no-type", event_type=None), "missing_field:event_type"),
    (_event("no-ts", event_ts=None), "missing_field:event_ts"),
    (_event("empty-user", user_id="  "), "empty_id:user_id"),
    (_event("empty-title", title_id=""), "empty_id:title_id"),
    (_event(""), "empty_id:event_id"),
    (_event("bad-type", event_type="teleport"), "bad_enum:event_type"),
    (_event("bad-device", device="smart_fridge"), "bad_enum:device"),
    (_event("rate-no-rating", event_type="rate"), "missing_field:rating"),
    (_event("rating-high", event_type="rate", rating=9.0), "rating_out_of_range"),
    (_event("negative", watch_seconds=-5.0), "negative_duration"),
    (_event("too-old", event_ts=dt.datetime(2025, 12, 1, tzinfo=UTC)), "ts_outside_day"),
    (_event("future", event_ts=dt.datetime(2099, 1, 1, tzinfo=UTC)), "ts_in_future"),
    (_event("next-day", event_ts=dt.datetime(2026, 1, 3, 0, 30, tzinfo=UTC)), "ts_outside_day"),
    (_event("good-2", event_type="complete"), None),
    (_event("good-2", event_type="play_stop"), "duplicate_event_id"),
    (_event("late-ok", event_ts=dt.datetime(2026, 1, 1, 22, 0, tzinfo=UTC)), None),
    (_event("no-device", device=None, country=None, position_seconds=None), None),
    (_event("rated", event_type="rate", rating=4.0, watch_seconds=None), None),
]


def _write_bad_day(landing_root: Path) -> Path:
    folder = landing_root / "events" / f"date={DAY.isoformat()}"
    folder.mkdir(parents=True)
    table = pa.Table.from_pylist([row for row, _ in BAD_ROWS], schema=landing_parquet_schema())
    pq.write_table(table, folder / "part-00000.parquet", row_group_size=8)  # 3 row groups
    # Another producer: integer ratings, microsecond timestamps without a zone, no country
    # column, an extra column. Read and cast to the contract; every row is good.
    other = pa.table(
        {
            "event_id": [f"other-{i}" for i in range(4)],
            "user_id": ["u2"] * 4,
            "title_id": ["t2"] * 4,
            "event_type": ["rate"] * 4,
            "event_ts": pa.array(
                [dt.datetime(2026, 1, 2, 12, i) for i in range(4)], pa.timestamp("us")
            ),
            "watch_seconds": pa.array([None] * 4, pa.float32()),
            "position_seconds": pa.array([None] * 4, pa.float64()),
            "rating": pa.array([1, 2, 3, 5], pa.int64()),
            "device": ["web"] * 4,
            "extra": [1, 2, 3, 4],
        }
    )
    pq.write_table(other, folder / "part-00001.parquet")
    return folder


def test_parquet_schemas_of_writer_and_reader_agree() -> None:
    spark_types = {
        "string": pa.string(),
        "timestamp": pa.timestamp("ms", tz="UTC"),
        "double": pa.float64(),
    }
    expected = pa.schema(
        [pa.field(f.name, spark_types[f.dataType.simpleString()]) for f in LANDING_PARQUET_SCHEMA]
    )
    assert landing_parquet_schema().equals(expected)


def test_every_bad_parquet_row_is_kept_with_its_reason_row_number_and_json(spark, settings):
    _write_bad_day(Path(settings.landing_root))
    report = ingest_events_day(spark, settings, DAY, IngestRules(), ingested_at=INGESTED_AT)

    good = [row["event_id"] for row, reason in BAD_ROWS if reason is None]
    assert report.received == len(BAD_ROWS) + 4
    assert report.accepted == len(good) + 4
    assert report.accepted + report.rejected == report.received
    assert report.validation is not None and report.validation.success

    rejected = read_partitions(spark, settings.table_path("bronze", "events_rejected"), DAY)
    rows = rejected.collect()
    assert all(r["source_file"].endswith("part-00000.parquet") for r in rows)
    got = {(r["line_number"], r["reason"]) for r in rows}
    want = {(i + 1, reason) for i, (_, reason) in enumerate(BAD_ROWS) if reason is not None}
    assert got == want
    # The raw record is the row as JSON, every field written out (nulls too).
    by_line = {r["line_number"]: json.loads(r["raw"]) for r in rows}
    assert by_line[3] == {
        **_event("no-user", user_id=None),
        "event_ts": "2026-01-02T10:00:00.000Z",
    }
    assert by_line[2]["event_id"] is None and list(by_line[2]) == LANDING_PARQUET_SCHEMA.names
    # A later duplicate too (first copy wins: line 18 is accepted).
    assert (by_line[19]["event_id"], by_line[19]["event_type"]) == ("good-2", "play_stop")

    accepted = read_partitions(spark, settings.table_path("bronze", "events"), DAY)
    assert sorted(r["event_id"] for r in accepted.select("event_id").collect()) == sorted(
        good + [f"other-{i}" for i in range(4)]
    )
    assert accepted.where("event_id = 'good-2'").first()["event_type"] == "complete"
    other = accepted.where("event_id = 'other-3'").first()
    assert (other["rating"], other["country"]) == (5.0, None)
    assert other["event_ts"] == dt.datetime(2026, 1, 2, 12, 3)


def _strings_unchecked(values: list[bytes]) -> pa.Array:
    """A Parquet string column holding these bytes as they are (pyarrow would refuse bad UTF-8
    from Python strings; another producer need not)."""
    offsets = pa.array([0, *itertools.accumulate(len(v) for v in values)], pa.int32())
    data = pa.py_buffer(b"".join(values))
    return pa.Array.from_buffers(pa.string(), len(values), [None, offsets.buffers()[1], data])


def test_a_parquet_string_that_is_not_utf8_is_rejected_with_its_row(spark, settings):
    folder = Path(settings.landing_root) / "events" / f"date={DAY.isoformat()}"
    folder.mkdir(parents=True)
    good = pa.Table.from_pylist(
        [_event(f"e{i}") for i in range(4)], schema=landing_parquet_schema()
    )
    bad_user = [b"u1", b"u\xff1", b"u1", b"u1"]
    bad_country = [b"GB", b"GB", b"G\xc3", b"GB"]
    table = good.set_column(1, "user_id", _strings_unchecked(bad_user))
    table = table.set_column(9, "country", _strings_unchecked(bad_country))
    assert table.schema.names[1] == "user_id" and table.schema.names[9] == "country"
    pq.write_table(table, folder / "part-00000.parquet")

    report = ingest_events_day(spark, settings, DAY, IngestRules(), ingested_at=INGESTED_AT)
    assert (report.received, report.accepted, report.rejected) == (4, 2, 2)
    rejected = read_partitions(spark, settings.table_path("bronze", "events_rejected"), DAY)
    rows = sorted(rejected.collect(), key=lambda r: r["line_number"])
    assert [(r["line_number"], r["reason"]) for r in rows] == [
        (2, "invalid_utf8"),
        (3, "invalid_utf8"),
    ]
    # The readable record replaces the bad bytes; the row itself stays in its landing file.
    assert json.loads(rows[0]["raw"])["user_id"] == "u\ufffd1"
    assert json.loads(rows[1]["raw"])["event_id"] == "e2"
    accepted = read_partitions(spark, settings.table_path("bronze", "events"), DAY)
    assert sorted(r["event_id"] for r in accepted.collect()) == ["e0", "e3"]


def test_a_parquet_column_of_the_wrong_type_fails_the_day_by_name(spark, settings):
    folder = Path(settings.landing_root) / "events" / f"date={DAY.isoformat()}"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"event_id": ["a"], "rating": ["five"]}), folder / "bad.parquet")
    with pytest.raises(ValueError, match=r"bad\.parquet: column 'rating' is string"):
        ingest_events_day(spark, settings, DAY, IngestRules(), ingested_at=INGESTED_AT)


# --- generator days: one seed as JSONL, as Parquet, and mixed ---------------------------------

CONFIG = replace(PRESETS["tiny"], bad_rate=0.06, max_events_per_file=400)
WORLD_DAY = CONFIG.start_date + dt.timedelta(days=1)
DAY_FOLDER = f"events/date={WORLD_DAY.isoformat()}"


def _home(root: Path, name: str, landing_format: str) -> Settings:
    settings = Settings.from_env().with_home(root / name)
    generate(CONFIG, settings.landing_root, WORLD_DAY, 1, landing_format=landing_format)
    return settings


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Settings]:
    root = tmp_path_factory.mktemp("formats")
    homes = {fmt: _home(root, fmt, fmt) for fmt in ("jsonl", "parquet")}
    # The mixed day: even parts as JSON lines, odd parts as Parquet (the same lines either way).
    mixed = Settings.from_env().with_home(root / "mixed")
    folder = Path(mixed.landing_root) / DAY_FOLDER
    folder.mkdir(parents=True)
    for fmt, settings in homes.items():
        for path in sorted((Path(settings.landing_root) / DAY_FOLDER).glob("part-*")):
            if (int(path.stem.split("-")[1]) % 2 == 1) == (fmt == "parquet"):
                shutil.copy(path, folder / path.name)
    homes["mixed"] = mixed
    return homes


def _manifest(settings: Settings) -> dict:
    return json.loads((Path(settings.landing_root) / DAY_FOLDER / "_injected.json").read_text())


def _bronze(spark, settings: Settings) -> tuple[list[tuple], dict[tuple[str, int], str]]:
    report = ingest_events_day(spark, settings, WORLD_DAY, IngestRules(), ingested_at=INGESTED_AT)
    assert report.accepted + report.rejected == report.received
    assert report.validation is not None and report.validation.success
    events = read_partitions(spark, settings.table_path("bronze", "events"), WORLD_DAY)
    rows = sorted(tuple(r) for r in events.drop("source_file", "ingested_at").collect())
    rejected = read_partitions(spark, settings.table_path("bronze", "events_rejected"), WORLD_DAY)
    stored = rejected.collect()
    assert all(r["raw"] for r in stored)
    reasons = {(r["source_file"].rsplit("/", 1)[1], r["line_number"]): r["reason"] for r in stored}
    assert len(reasons) == report.rejected
    return rows, reasons


def _assert_injected_rejected(manifest: dict, reasons: dict[tuple[str, int], str]) -> set[str]:
    """Every injected line is rejected with a reason its kind allows, and nothing else is."""
    expected = {}
    for kind, entries in manifest["injected"].items():
        for entry in entries:
            expected[(entry["file"], entry["line"])] = kind
    assert set(reasons) == set(expected)
    for where, kind in expected.items():
        assert reasons[where] in EXPECTED_REASONS[kind], (where, kind, reasons[where])
    return set(expected.values())


def test_jsonl_and_parquet_of_one_seed_give_the_same_bronze_events(spark, generated):
    jsonl_rows, jsonl_reasons = _bronze(spark, generated["jsonl"])
    parquet_rows, parquet_reasons = _bronze(spark, generated["parquet"])
    assert len(jsonl_rows) == _manifest(generated["jsonl"])["totals"]["good"] > 1_000
    assert parquet_rows == jsonl_rows

    manifest = _manifest(generated["parquet"])
    assert manifest["landing_format"] == "parquet"
    assert _assert_injected_rejected(manifest, parquet_reasons) == set(PARQUET_BAD_KINDS)
    _assert_injected_rejected(_manifest(generated["jsonl"]), jsonl_reasons)
    # Same seed, same slots: the bad records sit at the same line numbers in both formats.
    assert {(f.rsplit(".")[0], n) for f, n in parquet_reasons} == {
        (f.rsplit(".")[0], n) for f, n in jsonl_reasons
    }

    mixed_rows, mixed_reasons = _bronze(spark, generated["mixed"])
    files = list_landing_files(str(Path(generated["mixed"].landing_root) / DAY_FOLDER))
    assert files.jsonl and files.parquet
    assert mixed_rows == jsonl_rows
    # Each part's rejects are those of its own format's day, at the same lines.
    expected = {
        where: reason
        for reasons in (jsonl_reasons, parquet_reasons)
        for where, reason in reasons.items()
        if Path(files.folder, where[0]).exists()
    }
    assert mixed_reasons == expected
    stored = read_partitions(
        spark, generated["mixed"].table_path("bronze", "events_rejected"), WORLD_DAY
    )
    assert stored.where(F.col("source_file").endswith(".parquet")).count() > 0
