"""Bad-record injection: the manifest names exactly the injected lines, each broken as it says."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipelines.schemas import EVENT_TYPES
from pipelines.sources.bad_records import BAD_KINDS, REQUIRED_FIELDS
from pipelines.sources.synthetic import PRESETS, GenerationSummary, generate

# Enough lines and a high rate so every kind shows up several times.
CONFIG = replace(PRESETS["tiny"], bad_rate=0.05, max_events_per_file=1_500)


@pytest.fixture(scope="module")
def dirty(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GenerationSummary]:
    root = tmp_path_factory.mktemp("dirty")
    return root, generate(CONFIG, root)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GenerationSummary]:
    root = tmp_path_factory.mktemp("clean")
    return root, generate(replace(CONFIG, bad_rate=0.0), root)


def lines_of(folder: Path) -> dict[str, list[bytes]]:
    return {p.name: p.read_bytes().split(b"\n")[:-1] for p in sorted(folder.glob("part-*.jsonl"))}


def ts(record: dict) -> datetime:
    return datetime.fromisoformat(record["event_ts"].replace("Z", "+00:00"))


def test_manifest_matches_every_injected_line(dirty: tuple[Path, GenerationSummary]) -> None:
    root, summary = dirty
    kinds_seen: set[str] = set()
    for day in summary.days:
        folder = Path(day.manifest).parent
        manifest = json.loads(Path(day.manifest).read_text())
        files = lines_of(folder)
        assert {n: {"lines": len(v)} for n, v in files.items()} == {
            n: {"lines": t["lines"]} for n, t in manifest["files"].items()
        }
        injected = {(e["file"], e["line"]) for v in manifest["injected"].values() for e in v}
        assert len(injected) == manifest["totals"]["injected"] == day.injected > 0
        start = datetime(day.date.year, day.date.month, day.date.day, tzinfo=UTC)
        for kind, entries in manifest["injected"].items():
            assert kind in BAD_KINDS
            kinds_seen.update([kind] if entries else [])
            for entry in entries:
                raw = files[entry["file"]][entry["line"] - 1]
                if kind == "invalid_utf8":
                    with pytest.raises(UnicodeDecodeError):
                        raw.decode("utf-8")
                    continue
                if kind == "malformed_json":
                    with pytest.raises(json.JSONDecodeError):
                        json.loads(raw)
                    continue
                record = json.loads(raw)
                if kind == "missing_field":
                    assert set(REQUIRED_FIELDS) - set(record)
                elif kind == "wrong_type":
                    assert any(
                        isinstance(record[k], str)
                        for k in ("watch_seconds", "position_seconds", "rating")
                    )
                elif kind == "negative_duration":
                    assert record["watch_seconds"] < 0
                elif kind == "ts_far_past":
                    assert ts(record) < start - timedelta(days=365)
                elif kind == "ts_future":
                    assert ts(record) >= start + timedelta(days=2)
                elif kind == "unknown_event_type":
                    assert record["event_type"] not in EVENT_TYPES
                elif kind == "empty_user_id":
                    assert record["user_id"] == ""
                elif kind in ("duplicate_line", "duplicate_event_id"):
                    source = entry["duplicate_of"]
                    assert (source["file"], source["line"]) < (entry["file"], entry["line"])
                    original = files[source["file"]][source["line"] - 1]
                    if kind == "duplicate_line":
                        assert raw == original
                    else:
                        assert raw != original
                        assert record["event_id"] == json.loads(original)["event_id"]
        # Every line the manifest does not name is a good, parseable event.
        for name, lines in files.items():
            for number, raw in enumerate(lines, start=1):
                if (name, number) not in injected:
                    assert json.loads(raw.decode("utf-8"))["event_type"] in EVENT_TYPES
    assert kinds_seen == set(BAD_KINDS)


def test_injection_leaves_the_good_events_untouched(
    dirty: tuple[Path, GenerationSummary], clean: tuple[Path, GenerationSummary]
) -> None:
    for dirty_day, clean_day in zip(dirty[1].days, clean[1].days, strict=True):
        manifest = json.loads(Path(dirty_day.manifest).read_text())
        injected = {(e["file"], e["line"]) for v in manifest["injected"].values() for e in v}
        good = [
            raw
            for name, lines in lines_of(Path(dirty_day.manifest).parent).items()
            for number, raw in enumerate(lines, start=1)
            if (name, number) not in injected
        ]
        expected = [
            raw for lines in lines_of(Path(clean_day.manifest).parent).values() for raw in lines
        ]
        assert good == expected
        assert dirty_day.events == clean_day.events
        total = dirty_day.events + dirty_day.injected
        assert 0.02 < dirty_day.injected / total < 0.09
