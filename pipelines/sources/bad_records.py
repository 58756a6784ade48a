"""Bad landing records the synthetic source injects on purpose, so ingestion's rejects get tested.

Each kind is one way a real event feed goes wrong. Injected lines are *extra* lines inserted
between the good ones (the good events all stay), and every one is listed in the day's
``_injected.json`` manifest, so a test can check that bronze accepts exactly the good events and
rejects (or dedupes) exactly the injected ones. Except for the two duplicate kinds, an injected
line carries a fresh ``event_id`` (``e<day>-x<n>``) so that each line breaks one rule only.
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
"""Every kind of bad record; a manifest lists injected lines under these names."""

DUPLICATE_KINDS: frozenset[str] = frozenset({"duplicate_event_id", "duplicate_line"})
"""Kinds that copy an earlier line of the same day (so the copy must come after its source)."""

REQUIRED_FIELDS: tuple[str, ...] = ("event_id", "user_id", "title_id", "event_type", "event_ts")
"""Fields a ``missing_field`` record may drop: the non-nullable ones of ``bronze/events``."""

_UNKNOWN_EVENT_TYPES = ("pause", "seek", "skip_intro", "PLAY_START")
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


def plan_injections(rng: np.random.Generator, n_good: int, bad_rate: float) -> InjectionPlan:
    """Choose how many bad lines (``bad_rate`` of all lines), where, of which kind, from what."""
    if not 0.0 <= bad_rate < 1.0:
        raise ValueError(f"bad_rate must be in [0, 1), got {bad_rate}")
    if n_good == 0 or bad_rate == 0.0:
        return InjectionPlan(np.zeros(0, np.int64), [], np.zeros(0, np.int64))
    # bad / (good + bad) = bad_rate
    n_bad = int(rng.binomial(int(round(n_good / (1.0 - bad_rate))), bad_rate))
    n_lines = n_good + n_bad
    # Slot 0 always holds a good line, so every duplicate has an earlier line to copy.
    slots = np.sort(rng.choice(np.arange(1, n_lines), size=n_bad, replace=False))
    kinds = [BAD_KINDS[k] for k in rng.integers(0, len(BAD_KINDS), size=n_bad)]
    good_before = slots - np.arange(n_bad)  # good lines placed before each slot (>= 1)
    any_source = rng.integers(0, n_good, size=n_bad)
    earlier_source = (rng.random(n_bad) * good_before).astype(np.int64)
    is_duplicate = np.array([k in DUPLICATE_KINDS for k in kinds], dtype=bool)
    sources = np.where(is_duplicate, earlier_source, any_source)
    return InjectionPlan(slots.astype(np.int64), kinds, sources.astype(np.int64))


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
