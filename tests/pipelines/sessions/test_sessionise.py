"""Session boundaries on hand-built event sequences, with exact expected sessions."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import SparkSession

from pipelines.schemas import BRONZE_EVENTS
from pipelines.sessions.sessionise import (
    SessionConfig,
    previous_day_tail,
    sessionise_events,
    summarise_sessions,
)

T0 = dt.datetime(2026, 1, 2, 10, 0, 0)


def _events(spark: SparkSession, rows: list[tuple[str, str, dt.datetime]], day: dt.date):
    """Bronze-shaped rows from (event_id, user_id, event_ts)."""
    full = [
        (eid, user, "t1", "play_progress", ts, None, None, None, "tv", "GB", "f", ts, day)
        for eid, user, ts in rows
    ]
    return spark.createDataFrame(full, BRONZE_EVENTS)


def _sessions(df) -> list[list[str]]:
    """Event ids grouped by session, sessions in time order, events in seq order."""
    rows = df.select("event_id", "session_id", "seq_in_session", "event_ts").collect()
    groups: dict[str, list] = {}
    for row in rows:
        groups.setdefault(row["session_id"], []).append(row)
    ordered = sorted(groups.values(), key=lambda g: min(r["event_ts"] for r in g))
    return [[r["event_id"] for r in sorted(g, key=lambda r: r["seq_in_session"])] for g in ordered]


def test_gap_exactly_at_threshold_stays_just_over_splits(spark):
    gap = dt.timedelta(minutes=30)
    rows = [
        ("a", "u1", T0),
        ("b", "u1", T0 + gap),  # exactly 30 min: same session
        ("c", "u1", T0 + 2 * gap + dt.timedelta(seconds=1)),  # 30 min + 1 s: new session
    ]
    out = sessionise_events(_events(spark, rows, T0.date()), None, SessionConfig())
    assert _sessions(out) == [["a", "b"], ["c"]]


def test_out_of_order_input_gives_time_ordered_sessions_and_stable_ids(spark):
    rows = [
        ("c", "u1", T0 + dt.timedelta(minutes=20)),
        ("a", "u1", T0),
        ("x", "u2", T0),
        ("b", "u1", T0 + dt.timedelta(minutes=10)),
        ("d", "u1", T0 + dt.timedelta(hours=3)),
    ]
    first = sessionise_events(_events(spark, rows, T0.date()), None, SessionConfig())
    assert _sessions(first.where("user_id = 'u1'")) == [["a", "b", "c"], ["d"]]
    seqs = {r["event_id"]: r["seq_in_session"] for r in first.collect()}
    assert (seqs["a"], seqs["b"], seqs["c"], seqs["d"], seqs["x"]) == (0, 1, 2, 0, 0)
    again = sessionise_events(
        _events(spark, list(reversed(rows)), T0.date()), None, SessionConfig()
    )
    ids = lambda df: {r["event_id"]: r["session_id"] for r in df.collect()}  # noqa: E731
    assert ids(first) == ids(again)


def test_configurable_gap(spark):
    rows = [("a", "u1", T0), ("b", "u1", T0 + dt.timedelta(minutes=10))]
    out = sessionise_events(_events(spark, rows, T0.date()), None, SessionConfig(5))
    assert _sessions(out) == [["a"], ["b"]]


def test_session_crossing_midnight_stays_whole(spark):
    day1 = dt.date(2026, 1, 1)
    day2 = dt.date(2026, 1, 2)
    late_evening = dt.datetime(2026, 1, 1, 23, 40)
    first = sessionise_events(
        _events(
            spark,
            [
                ("p", "u1", late_evening - dt.timedelta(hours=2)),
                ("q", "u1", late_evening),
                ("r", "u1", late_evening + dt.timedelta(minutes=15)),
            ],
            day1,
        ),
        None,
        SessionConfig(),
    )
    tail = previous_day_tail(first)
    assert sorted(r["event_id"] for r in tail.collect()) == ["q", "r"]

    second = sessionise_events(
        _events(
            spark,
            [
                ("s", "u1", dt.datetime(2026, 1, 2, 0, 10)),  # 15 min after r: continues
                ("t", "u1", dt.datetime(2026, 1, 2, 0, 20)),
                ("u", "u1", dt.datetime(2026, 1, 2, 9, 0)),  # new session
            ],
            day2,
        ),
        tail,
        SessionConfig(),
    )
    day1_ids = {r["event_id"]: r for r in first.collect()}
    day2_ids = {r["event_id"]: r for r in second.collect()}
    assert day2_ids["s"]["session_id"] == day1_ids["q"]["session_id"]
    assert (day2_ids["s"]["seq_in_session"], day2_ids["t"]["seq_in_session"]) == (2, 3)
    assert day2_ids["u"]["session_id"] != day1_ids["q"]["session_id"]
    assert day2_ids["u"]["seq_in_session"] == 0

    both = first.unionByName(second)
    summary = {r["session_id"]: r for r in summarise_sessions(both, day1, day2).collect()}
    crossing = summary[day1_ids["q"]["session_id"]]
    assert crossing["n_events"] == 4
    assert crossing["event_date"] == day1
    assert crossing["end_ts"] == dt.datetime(2026, 1, 2, 0, 20)
    assert len(summary) == 3


def test_late_event_from_previous_day_joins_the_tail_session(spark):
    day1 = dt.date(2026, 1, 1)
    first = sessionise_events(
        _events(
            spark,
            [
                ("q", "u1", dt.datetime(2026, 1, 1, 23, 30)),
                ("r", "u1", dt.datetime(2026, 1, 1, 23, 50)),
            ],
            day1,
        ),
        None,
        SessionConfig(),
    )
    # Arrives with day 2's files but happened at 23:40 on day 1, between q and r.
    late = _events(spark, [("late", "u1", dt.datetime(2026, 1, 1, 23, 40))], dt.date(2026, 1, 2))
    second = sessionise_events(late, previous_day_tail(first), SessionConfig())
    row = second.first()
    assert row["session_id"] == first.first()["session_id"]
    assert row["seq_in_session"] == 2


def test_events_at_the_same_instant_get_a_stable_order(spark):
    # Duplicated timestamps (e.g. a client retry under a new id): one session, ordered by event_id.
    rows = [("b", "u1", T0), ("a", "u1", T0), ("c", "u1", T0 + dt.timedelta(minutes=1))]
    out = sessionise_events(_events(spark, rows, T0.date()), None, SessionConfig())
    assert _sessions(out) == [["a", "b", "c"]]
