"""Parquet landing from the synthetic source: the JSONL events, typed, with typed bad rows.

Runs on the ``tiny`` preset without Spark (bronze's side is in ``tests/pipelines/ingest``).
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import pipelines.sources.synthetic as synthetic
from pipelines.schemas import DEVICES, EVENT_TYPES, LANDING_EVENT_FIELDS
from pipelines.sources.bad_records import PARQUET_BAD_KINDS, REQUIRED_FIELDS
from pipelines.sources.synthetic import (
    PRESETS,
    GenerationSummary,
    generate,
    landing_parquet_schema,
    main,
)

CONFIG = replace(PRESETS["tiny"], bad_rate=0.05, max_events_per_file=1_500)


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, GenerationSummary]]:
    out = {}
    for fmt in ("jsonl", "parquet"):
        root = tmp_path_factory.mktemp(fmt)
        out[fmt] = (root, generate(CONFIG, root, landing_format=fmt))
    return out


def jsonl_rows(path: Path) -> list[dict]:
    rows = []
    for raw in path.read_bytes().split(b"\n")[:-1]:
        try:
            record = json.loads(raw)
        except ValueError:  # malformed JSON or invalid UTF-8: an injected line
            record = None
        rows.append(record)
    return rows


def parquet_rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def as_jsonl(row: dict) -> dict:
    """A Parquet row written the way the JSONL writes it."""
    out = dict(row)
    ts = row["event_ts"]
    out["event_ts"] = ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"
    if row["rating"] is not None:
        out["rating"] = int(row["rating"])
    return out


def injected_at(manifest: dict) -> dict[tuple[str, int], tuple[str, dict]]:
    return {
        (e["file"], e["line"]): (kind, e) for kind, v in manifest["injected"].items() for e in v
    }


def test_parquet_holds_the_jsonl_events_at_the_same_rows(both) -> None:
    (_, jsonl), (_, parquet) = both["jsonl"], both["parquet"]
    assert parquet.events == jsonl.events and parquet.injected == jsonl.injected
    for jday, pday in zip(jsonl.days, parquet.days, strict=True):
        jman = json.loads(Path(jday.manifest).read_text())
        pman = json.loads(Path(pday.manifest).read_text())
        assert (jman["landing_format"], pman["landing_format"]) == ("jsonl", "parquet")
        assert pman["world"] == jman["world"]  # one world, whatever the format
        jbad = {(f.rsplit(".", 1)[0], n) for f, n in injected_at(jman)}
        pbad = {(f.rsplit(".", 1)[0], n) for f, n in injected_at(pman)}
        assert jbad == pbad  # same seed: the bad records take the same slots
        assert [Path(f).suffix for f in pday.files] == [".parquet"] * len(pday.files)
        for jfile, pfile in zip(jday.files, pday.files, strict=True):
            jrows, prows = jsonl_rows(Path(jfile)), parquet_rows(Path(pfile))
            assert len(jrows) == len(prows) == pman["files"][Path(pfile).name]["lines"]
            stem = Path(pfile).stem
            for number, (jrow, prow) in enumerate(zip(jrows, prows, strict=True), start=1):
                if (stem, number) not in pbad:
                    assert as_jsonl(prow) == jrow


def test_manifest_names_every_injected_parquet_row(both) -> None:
    root, summary = both["parquet"]
    assert pq.read_schema(summary.days[0].files[0]).equals(landing_parquet_schema())
    kinds_seen: set[str] = set()
    for day in summary.days:
        manifest = json.loads(Path(day.manifest).read_text())
        assert set(manifest["injected"]) == set(PARQUET_BAD_KINDS)
        rows = {Path(f).name: parquet_rows(Path(f)) for f in day.files}
        bad = injected_at(manifest)
        assert len(bad) == manifest["totals"]["injected"] == day.injected > 0
        start = datetime(day.date.year, day.date.month, day.date.day, tzinfo=UTC)
        for (name, number), (kind, entry) in bad.items():
            kinds_seen.add(kind)
            row = rows[name][number - 1]
            assert list(row) == list(LANDING_EVENT_FIELDS)
            if kind == "missing_field":
                assert [f for f in REQUIRED_FIELDS if row[f] is None]
            elif kind == "negative_duration":
                assert row["watch_seconds"] < 0
            elif kind == "ts_far_past":
                assert row["event_ts"] < start - timedelta(days=365)
            elif kind == "ts_future":
                assert row["event_ts"] >= start + timedelta(days=2)
            elif kind == "unknown_event_type":
                assert row["event_type"] not in EVENT_TYPES
            elif kind == "unknown_device":
                assert row["device"] not in DEVICES
            elif kind == "empty_user_id":
                assert row["user_id"] == ""
            elif kind == "rating_out_of_range":
                assert row["event_type"] == "rate" and not 0 <= row["rating"] <= 5
            else:
                source = entry["duplicate_of"]
                assert (source["file"], source["line"]) < (name, number)
                original = rows[source["file"]][source["line"] - 1]
                assert row["event_id"] == original["event_id"]
                assert (row == original) == (kind == "duplicate_line")
        for name, file_rows in rows.items():
            for number, row in enumerate(file_rows, start=1):
                if (name, number) not in bad:
                    assert row["event_type"] in EVENT_TYPES and row["device"] in DEVICES
    assert kinds_seen == set(PARQUET_BAD_KINDS)


def test_row_groups_stream_and_output_is_deterministic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, both
) -> None:
    root, summary = both["parquet"]
    generate(CONFIG, tmp_path / "again", landing_format="parquet")
    monkeypatch.setattr(synthetic, "_PARQUET_ROW_GROUP", 200)
    small = generate(CONFIG, tmp_path / "small", landing_format="parquet")
    for day in summary.days:
        for path in day.files:
            relative = Path(path).relative_to(root)
            assert (tmp_path / "again" / relative).read_bytes() == Path(path).read_bytes()
            grouped = pq.ParquetFile(tmp_path / "small" / relative)
            assert grouped.metadata.num_row_groups == -(-grouped.metadata.num_rows // 200)
            assert grouped.read().equals(pq.read_table(path))
    assert small.events == summary.events


def test_rewriting_a_day_in_the_other_format_leaves_no_stale_parts(tmp_path: Path) -> None:
    config = replace(CONFIG, days=1)
    generate(config, tmp_path)
    (day,) = generate(config, tmp_path, landing_format="parquet").days
    folder = Path(day.manifest).parent
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [Path(f).name for f in day.files] + ["_injected.json"]
    )
    assert not [p for p in tmp_path.rglob(".*")], "temporary files were left behind"
    with pytest.raises(ValueError, match="landing_format"):
        generate(config, tmp_path, landing_format="csv")


def test_cli_landing_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--landing-format" in capsys.readouterr().out
    argv = ["--preset", "tiny", "--days", "1", "--landing-root", str(tmp_path)]
    summary = main([*argv, "--landing-format", "parquet", "--bad-rate", "0.01"])
    assert summary.events > 0
    (part,) = tmp_path.glob("events/date=2026-01-01/part-*")
    assert part.name == "part-00000.parquet"
    assert pq.read_metadata(part).num_rows == summary.events + summary.injected
