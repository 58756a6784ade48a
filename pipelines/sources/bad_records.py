"""Bad landing records the synthetic source injects on purpose, so ingestion's rejects get tested.

Each kind is one way a real event feed goes wrong. Injected lines are *extra* lines inserted
between the good ones (the good events all stay), and every one is listed in the day's
``_injected.json`` manifest, so a test can check that bronze accepts exactly the good events and
rejects (or dedupes) exactly the injected ones. Except for the two duplicate kinds, an injected
line carries a fresh ``event_id`` (``e<day>-x<n>``) so that each line breaks one rule only.

Parquet landing files are typed, so a line that is not JSON or holds a string where a number
belongs cannot exist there: ``PARQUET_BAD_KINDS`` are the kinds a typed row can carry (missing
fields as nulls, empty ids, bad enums, negative durations, timestamps far in the past or the
future, duplicates, out-of-range ratings), and ``render_bad_record`` builds them as typed rows.
A string that is not UTF-8 can be in a Parquet file from another producer (bronze rejects it),
but not in one from pyarrow, which this generator writes with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np

BAD_KINDS: tuple[str, ...] = (
    "malformed_json",
    "missing_field",
    "wrong_type",
    "negative_duration",
    "ts_far_past",
    "ts_future",
    "duplicate_event_id",
    "duplicate_line",
    "invalid_utf8",
    "unknown_event_type",
    "empty_user_id",
)
"""Every kind of bad JSONL line; a manifest lists injected lines under these names."""

PARQUET_BAD_KINDS: tuple[str, ...] = (
    "missing_field",
    "negative_duration",
    "ts_far_past",
    "ts_future",
    "duplicate_event_id",
    "duplicate_line",
    "unknown_event_type",
    "unknown_device",
    "empty_user_id",
    "rating_out_of_range",
)
"""The kinds a typed Parquet row can carry (no malformed JSON, invalid UTF-8 or wrong types)."""


DUPLICATE_KINDS: frozenset[str] = frozenset({"duplicate_event_id", "duplicate_line"})
"""Kinds that copy an earlier line of the same day (so the copy must come after its source)."""

REQUIRED_FIELDS: tuple[str, ...] = ("event_id", "user_id", "title_id", "event_type", "event_ts")
"""Fields a ``missing_field`` record may drop: the non-nullable ones of ``bronze/events``."""

EXPECTED_REASONS: dict[str, frozenset[str]] = {
    "malformed_json": frozenset({"malformed_json"}),
    "missing_field": frozenset(f"missing_field:{f}" for f in REQUIRED_FIELDS),
    "wrong_type": frozenset(
        {"wrong_type:watch_seconds", "wrong_type:position_seconds", "wrong_type:rating"}
    ),
    "negative_duration": frozenset({"negative_duration"}),
    "ts_far_past": frozenset({"ts_outside_day"}),
    # Up to 400 days ahead of the day: in the future when ingested on time, merely outside the
    # day when ingested much later (a backfill).
    "ts_future": frozenset({"ts_in_future", "ts_outside_day"}),
    # The copy is moved up to 10 minutes: past midnight it breaks the day window first.
    "duplicate_event_id": frozenset({"duplicate_event_id", "ts_outside_day"}),
    "duplicate_line": frozenset({"duplicate_event_id"}),
    "invalid_utf8": frozenset({"invalid_utf8"}),
    "unknown_event_type": frozenset({"bad_enum:event_type"}),
    "unknown_device": frozenset({"bad_enum:device"}),
    "empty_user_id": frozenset({"empty_id:user_id"}),
    "rating_out_of_range": frozenset({"rating_out_of_range"}),
}
"""The ``bronze/events_rejected`` reasons (``pipelines.ingest.rules``) each injected kind may get."""

_UNKNOWN_EVENT_TYPES = ("pause", "seek", "skip_intro", "PLAY_START")
_UNKNOWN_DEVICES = ("smart_fridge", "TV", "vr_headset", "car")
_OUT_OF_RANGE_RATINGS = (-1.0, 6.0, 10.0, 99.0)
# (field, wrong value): strings where a number belongs. event_ts is left alone because epoch
# seconds are a legal landing timestamp.
_WRONG_TYPES: tuple[tuple[str, Any], ...] = (
    ("watch_seconds", "abc"),
    ("position_seconds", "12 min"),
    ("rating", "five"),
)


@dataclass(frozen=True)
class InjectionPlan:
    """Where a day's bad lines go in the day's combined line sequence (good + injected)."""

    slots: np.ndarray
    """(B,) x int64 sorted positions of the injected lines among all of the day's lines."""
    kinds: list[str]
    """Kind of each injected line, aligned with ``slots``."""
    sources: np.ndarray
    """(B,) x int64 good event each bad line derives from (an earlier one, for duplicates)."""


def plan_injections(
    rng: np.random.Generator,
    n_good: int,
    bad_rate: float,
    kinds: tuple[str, ...] = BAD_KINDS,
) -> InjectionPlan:
    """Choose how many bad lines (``bad_rate`` of all lines), where, of which of ``kinds``, from what.

    The number and the slots of the bad lines are drawn before their kinds, so a JSONL and a
    Parquet day of one seed (``BAD_KINDS`` and ``PARQUET_BAD_KINDS``) put them at the same lines.
    """
    if not 0.0 <= bad_rate < 1.0:
        raise ValueError(f"bad_rate must be in [0, 1), got {bad_rate}")
    if n_good == 0 or bad_rate == 0.0:
        return InjectionPlan(np.zeros(0, np.int64), [], np.zeros(0, np.int64))
    # bad / (good + bad) = bad_rate
    n_bad = int(rng.binomial(int(round(n_good / (1.0 - bad_rate))), bad_rate))
    n_lines = n_good + n_bad
    # Slot 0 always holds a good line, so every duplicate has an earlier line to copy.
    slots = np.sort(rng.choice(np.arange(1, n_lines), size=n_bad, replace=False))
    chosen = [kinds[k] for k in rng.integers(0, len(kinds), size=n_bad)]
    good_before = slots - np.arange(n_bad)  # good lines placed before each slot (>= 1)
    any_source = rng.integers(0, n_good, size=n_bad)
    earlier_source = (rng.random(n_bad) * good_before).astype(np.int64)
    is_duplicate = np.array([k in DUPLICATE_KINDS for k in chosen], dtype=bool)
    sources = np.where(is_duplicate, earlier_source, any_source)
    return InjectionPlan(slots.astype(np.int64), chosen, sources.astype(np.int64))


def _iso_ms(moment: datetime) -> str:
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def _dumps(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode("utf-8")


def render_bad_line(
    kind: str, source_line: str, fresh_id: str, day: date, rng: np.random.Generator
) -> bytes:
    """One injected line (with its newline) of ``kind``, derived from a good ``source_line``."""
    if kind == "duplicate_line":
        return source_line.encode("utf-8")
    record: dict[str, Any] = json.loads(source_line)
    if kind == "duplicate_event_id":
        # Same id, different content: a later correction or a replayed event, moved in time.
        moved = datetime.fromisoformat(record["event_ts"]) + timedelta(
            seconds=int(rng.integers(1, 600))
        )
        record["event_ts"] = _iso_ms(moved)
        return _dumps(record) + b"\n"
    record["event_id"] = fresh_id
    day_start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    if kind == "malformed_json":
        text = _dumps(record)
        # Any proper prefix of a JSON object lacks its closing brace, so it never parses.
        return text[: int(rng.integers(1, len(text) - 1))] + b"\n"
    if kind == "missing_field":
        del record[REQUIRED_FIELDS[int(rng.integers(0, len(REQUIRED_FIELDS)))]]
    elif kind == "wrong_type":
        field, value = _WRONG_TYPES[int(rng.integers(0, len(_WRONG_TYPES)))]
        record[field] = value
    elif kind == "negative_duration":
        record["event_type"] = "play_stop"
        record["watch_seconds"] = -float(rng.integers(1, 3600))
        record["position_seconds"] = float(rng.integers(0, 3600))
    elif kind == "ts_far_past":
        record["event_ts"] = _iso_ms(
            day_start - timedelta(days=int(rng.integers(5 * 365, 30 * 365)))
        )
    elif kind == "ts_future":
        record["event_ts"] = _iso_ms(day_start + timedelta(days=int(rng.integers(2, 400))))
    elif kind == "invalid_utf8":
        # 0xFF never occurs in UTF-8, so the line cannot be decoded.
        text = _dumps(record)
        return text.replace(b'"user_id":"', b'"user_id":"\xff\xfe', 1) + b"\n"
    elif kind == "unknown_event_type":
        record["event_type"] = _UNKNOWN_EVENT_TYPES[int(rng.integers(0, len(_UNKNOWN_EVENT_TYPES)))]
    elif kind == "empty_user_id":
        record["user_id"] = ""
    else:
        raise ValueError(f"unknown bad-record kind {kind!r}; expected one of {BAD_KINDS}")
    return _dumps(record) + b"\n"


def render_bad_record(
    kind: str, source: dict[str, Any], fresh_id: str, day: date, rng: np.random.Generator
) -> dict[str, Any]:
    """One injected typed row of ``kind`` (a ``PARQUET_BAD_KINDS`` kind), from a good ``source``.

    ``source`` maps the landing fields to typed values (``event_ts`` an aware ``datetime``,
    numbers as floats, ``None`` for null); the result has the same keys and types.
    """
    record = dict(source)
    if kind == "duplicate_line":
        return record
    if kind == "duplicate_event_id":
        record["event_ts"] = record["event_ts"] + timedelta(seconds=int(rng.integers(1, 600)))
        return record
    record["event_id"] = fresh_id
    day_start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    if kind == "missing_field":
        record[REQUIRED_FIELDS[int(rng.integers(0, len(REQUIRED_FIELDS)))]] = None
    elif kind == "negative_duration":
        record["event_type"] = "play_stop"
        record["watch_seconds"] = -float(rng.integers(1, 3600))
        record["position_seconds"] = float(rng.integers(0, 3600))
    elif kind == "ts_far_past":
        record["event_ts"] = day_start - timedelta(days=int(rng.integers(5 * 365, 30 * 365)))
    elif kind == "ts_future":
        record["event_ts"] = day_start + timedelta(days=int(rng.integers(2, 400)))
    elif kind == "unknown_event_type":
        record["event_type"] = _UNKNOWN_EVENT_TYPES[int(rng.integers(0, len(_UNKNOWN_EVENT_TYPES)))]
    elif kind == "unknown_device":
        record["device"] = _UNKNOWN_DEVICES[int(rng.integers(0, len(_UNKNOWN_DEVICES)))]
    elif kind == "empty_user_id":
        record["user_id"] = ""
    elif kind == "rating_out_of_range":
        record["event_type"] = "rate"
        record["watch_seconds"] = record["position_seconds"] = None
        record["rating"] = _OUT_OF_RANGE_RATINGS[int(rng.integers(0, len(_OUT_OF_RANGE_RATINGS)))]
    else:
        raise ValueError(
            f"unknown Parquet bad-record kind {kind!r}; expected one of {PARQUET_BAD_KINDS}"
        )
    return record
