"""The synthetic event source: determinism, the landing contract, and the world's invariants.

Everything runs on the ``tiny`` preset (a few thousand events) without Spark.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from pipelines.schemas import BRONZE_TITLES, DEVICES, EVENT_TYPES, LANDING_EVENT_FIELDS
from pipelines.sources.oracle import Oracle
from pipelines.sources.synthetic import (
    MANIFEST_NAME,
    PRESETS,
    GenerationSummary,
    generate,
    main,
    scale_to_target_events,
)

TINY = PRESETS["tiny"]
TS_PATTERN = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def read_events(root: Path) -> list[dict]:
    """Every event line under ``root`` (must all be valid), with its day folder as ``_day``."""
    events = []
    for part in sorted(root.glob("events/date=*/part-*.jsonl")):
        day = date.fromisoformat(part.parent.name.removeprefix("date="))
        for line in part.read_bytes().decode("utf-8").splitlines():
            record = json.loads(line)
            record["_day"] = day
            events.append(record)
    return events


def parse_ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def clean_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GenerationSummary]:
    root = tmp_path_factory.mktemp("landing")
    return root, generate(TINY, root)


@pytest.fixture(scope="module")
def clean_events(clean_world: tuple[Path, GenerationSummary]) -> list[dict]:
    return read_events(clean_world[0])


@pytest.fixture(scope="module")
def oracle() -> Oracle:
    return Oracle.from_config(TINY)


def all_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    config = replace(TINY, bad_rate=0.02)
    generate(config, tmp_path / "a")
    generate(config, tmp_path / "b")
    generate(replace(config, seed=config.seed + 1), tmp_path / "c")
    a, b, c = all_bytes(tmp_path / "a"), all_bytes(tmp_path / "b"), all_bytes(tmp_path / "c")
    assert a == b
    assert a.keys() == c.keys()
    assert a != c


def test_one_day_alone_equals_that_day_of_a_full_run(
    tmp_path: Path, clean_world: tuple[Path, GenerationSummary]
) -> None:
    root, _ = clean_world
    last = TINY.start_date + timedelta(days=TINY.days - 1)
    summary = generate(TINY, tmp_path, last, 1)
    assert [d.date for d in summary.days] == [last]
    folder = f"events/date={last.isoformat()}"
    assert all_bytes(tmp_path / folder) == all_bytes(root / folder)


def test_layout_summary_and_no_temp_files(clean_world: tuple[Path, GenerationSummary]) -> None:
    root, summary = clean_world
    assert [d.date for d in summary.days] == [
        TINY.start_date + timedelta(days=i) for i in range(TINY.days)
    ]
    assert 2_000 <= summary.events <= 20_000  # "a few thousand"
    for day in summary.days:
        folder = root / "events" / f"date={day.date.isoformat()}"
        assert [Path(f).name for f in day.files] == ["part-00000.jsonl"]
        assert (folder / MANIFEST_NAME).is_file()
        assert (root / "titles" / f"date={day.date.isoformat()}" / "titles.jsonl").is_file()
    assert not [p for p in root.rglob(".*")], "temporary files were left behind"


def test_every_line_is_a_valid_typed_event(clean_events: list[dict], oracle: Oracle) -> None:
    titles = set(oracle.title_ids)
    ids = [e["event_id"] for e in clean_events]
    assert len(ids) == len(set(ids))
    seen_types = set()
    for e in clean_events:
        assert list(e)[:-1] == list(LANDING_EVENT_FIELDS)
        assert re.fullmatch(r"u\d{6}", e["user_id"])
        assert e["title_id"] in titles
        assert e["event_type"] in EVENT_TYPES
        assert TS_PATTERN.match(e["event_ts"])
        assert e["device"] in DEVICES
        assert re.fullmatch(r"[A-Z]{2}", e["country"])
        for key in ("watch_seconds", "position_seconds"):
            assert e[key] is None or (isinstance(e[key], float) and e[key] >= 0)
        if e["event_type"] == "rate":
            assert e["rating"] in (1, 2, 3, 4, 5)
        else:
            assert e["rating"] is None
        if e["event_type"] in ("play_progress", "play_stop", "complete"):
            assert e["watch_seconds"] is not None and e["position_seconds"] is not None
        seen_types.add(e["event_type"])
    assert seen_types == set(EVENT_TYPES)


def test_timestamps_fall_inside_their_day_folder_and_sessions_cross_midnight(
    clean_events: list[dict],
) -> None:
    for e in clean_events:
        assert parse_ts(e["event_ts"]).date() == e["_day"]
    # A play started before midnight whose end lands in the next day's folder.
    starts = {}
    crossed = 0
    for e in sorted(clean_events, key=lambda e: e["event_ts"]):
        key = (e["user_id"], e["title_id"])
        if e["event_type"] == "play_start":
            starts[key] = e["_day"]
        elif (
            e["event_type"] in ("play_stop", "complete") and starts.get(key, e["_day"]) < e["_day"]
        ):
            crossed += 1
    assert crossed > 0


def test_titles_snapshot_matches_bronze_titles(
    clean_world: tuple[Path, GenerationSummary],
) -> None:
    root, summary = clean_world
    counts = []
    genre_counts = set()
    for day in summary.days:
        rows = [json.loads(line) for line in Path(day.titles_file).read_text().splitlines()]
        counts.append(len(rows))
        assert len(rows) == day.titles
        for row in rows:
            assert list(row) == BRONZE_TITLES.fieldNames()
            assert date.fromisoformat(row["release_date"]) <= day.date
            genre_counts.add(len(row["genres"]))
            assert all(isinstance(g, str) for g in row["genres"])
            assert (row["series_id"] is None) == (row["season"] is None) == (row["episode"] is None)
            minutes = row["runtime_seconds"] / 60
            assert 25 <= minutes <= 60 if row["series_id"] else 90 <= minutes <= 150
    assert counts == sorted(counts) and counts[0] < counts[-1]  # new releases appear
    assert genre_counts == {1, 2, 3}  # 1-3 genres a title, and every count occurs


def test_no_title_is_seen_before_its_release(clean_events: list[dict], oracle: Oracle) -> None:
    cat = oracle.catalogue
    index = {t: i for i, t in enumerate(cat.title_ids)}
    for e in clean_events:
        released = cat.start_date + timedelta(days=int(cat.release_day[index[e["title_id"]]]))
        assert parse_ts(e["event_ts"]).date() >= released


def test_series_episodes_are_watched_in_order(clean_events: list[dict], oracle: Oracle) -> None:
    cat = oracle.catalogue
    index = {t: i for i, t in enumerate(cat.title_ids)}
    watched: dict[tuple[str, int], list[int]] = {}
    for e in sorted(clean_events, key=lambda e: e["event_ts"]):
        t = index[e["title_id"]]
        if e["event_type"] == "play_start" and t >= cat.n_films:
            key = (e["user_id"], int(cat.series_index[t]))
            watched.setdefault(key, []).append(int(cat.ordinal[t]))
    assert any(len(v) >= 3 for v in watched.values()), "no member binged a series"
    for ordinals in watched.values():
        assert ordinals == list(range(len(ordinals)))


def test_watch_fraction_grows_with_affinity(clean_events: list[dict], oracle: Oracle) -> None:
    cat = oracle.catalogue
    index = {t: i for i, t in enumerate(cat.title_ids)}
    users, titles, fractions = [], [], []
    for e in clean_events:
        if e["event_type"] in ("play_stop", "complete"):
            t = index[e["title_id"]]
            users.append(oracle.user_index(e["user_id"]))
            titles.append(t)
            fractions.append(e["watch_seconds"] / cat.runtime_seconds[t])
    affinity = oracle.affinity(np.array(users))[np.arange(len(users)), titles]
    fraction = np.array(fractions)
    assert np.corrcoef(affinity, fraction)[0, 1] > 0.5
    low, high = np.quantile(affinity, [0.25, 0.75])
    assert fraction[affinity >= high].mean() > fraction[affinity <= low].mean() + 0.3


def test_sharding_keeps_files_under_the_limit(tmp_path: Path) -> None:
    config = replace(TINY, days=1, max_events_per_file=500, bad_rate=0.05)
    summary = generate(config, tmp_path)
    (day,) = summary.days
    assert len(day.files) >= 3
    manifest = json.loads(Path(day.manifest).read_text())
    for path in day.files:
        lines = Path(path).read_bytes().splitlines()
        assert len(lines) <= 500
        assert manifest["files"][Path(path).name]["lines"] == len(lines)
    assert manifest["totals"]["good"] == day.events


def test_cli_help_and_tiny_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--target-events" in capsys.readouterr().out
    summary = main(["--preset", "tiny", "--days", "1", "--landing-root", str(tmp_path)])
    assert summary.events > 0
    assert list(tmp_path.glob("events/date=2026-01-01/part-00000.jsonl"))


def test_target_events_scales_members(tmp_path: Path) -> None:
    config = scale_to_target_events(TINY, 30_000)
    assert config.n_members > TINY.n_members
    summary = generate(config, tmp_path)
    assert 0.7 * 30_000 <= summary.events <= 1.3 * 30_000


def test_config_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="before the world's first day"):
        generate(TINY, tmp_path, TINY.start_date - timedelta(days=1), 1)
    with pytest.raises(ValueError, match="bad_rate"):
        generate(replace(TINY, bad_rate=1.5), tmp_path)


def test_oracle_handles_naive_and_aware_times(oracle: Oracle) -> None:
    at = datetime(2026, 1, 2, 21, 0)
    naive = oracle.next_title_probs("u000001", at, [])
    aware = oracle.next_title_probs("u000001", at.replace(tzinfo=UTC), [])
    assert np.array_equal(naive, aware)
    assert naive.shape == (len(oracle.title_ids),) and abs(naive.sum() - 1) < 1e-9
    with pytest.raises(KeyError, match="unknown user_id"):
        oracle.next_title_probs("nobody", at, [])
