"""Sessions across midnights on the lake: summaries of D-1 and D, late events, re-runs."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from pipelines.lake import read_partitions, replace_partitions
from pipelines.schemas import BRONZE_EVENTS
from pipelines.sessions.sessionise import SessionConfig
from pipelines.sessions.silver import sessionise_day

DAY1, DAY2, DAY3 = dt.date(2026, 1, 1), dt.date(2026, 1, 2), dt.date(2026, 1, 3)

# (event_id, user, title, ts, arrival day)
EVENTS = [
    ("a1", "u1", "t1", dt.datetime(2026, 1, 1, 23, 50), DAY1),
    ("a2", "u1", "t2", dt.datetime(2026, 1, 2, 0, 10), DAY2),  # continues a1 across midnight
    ("a3", "u1", "t2", dt.datetime(2026, 1, 2, 0, 20), DAY2),
    ("b1", "u1", "t3", dt.datetime(2026, 1, 2, 23, 55), DAY2),  # new session, goes on into day 3
    ("b2", "u1", "t1", dt.datetime(2026, 1, 3, 0, 5), DAY3),
    ("c1", "u2", "t1", dt.datetime(2026, 1, 2, 10, 0), DAY2),
    ("d1", "u3", "t1", dt.datetime(2026, 1, 1, 22, 0), DAY2),  # late: happened on day 1
    ("e1", "u4", "t1", dt.datetime(2026, 1, 1, 9, 0), DAY1),  # untouched by day 2
]


def _write_bronze(spark, settings) -> None:
    for day in (DAY1, DAY2, DAY3):
        rows = [
            (eid, user, title, "play_progress", ts, 60.0, None, None, "tv", "GB", "f", ts, day)
            for eid, user, title, ts, arrival in EVENTS
            if arrival == day
        ]
        replace_partitions(
            spark.createDataFrame(rows, BRONZE_EVENTS),
            settings.table_path("bronze", "events"),
            day,
            schema=BRONZE_EVENTS,
        )


def _sessions(spark, settings) -> dict[tuple[str, dt.date], tuple[int, int]]:
    """(user, start day) -> (n_events, n_titles)."""
    rows = read_partitions(spark, settings.table_path("silver", "sessions"), DAY1, DAY3)
    return {(r["user_id"], r["event_date"]): (r["n_events"], r["n_titles"]) for r in rows.collect()}


def test_summaries_follow_sessions_across_midnights_and_survive_a_rerun(spark, settings):
    _write_bronze(spark, settings)
    for day in (DAY1, DAY2, DAY3):
        sessionise_day(spark, settings, day, SessionConfig())
    expected = {
        ("u1", DAY1): (3, 2),  # a1 + a2 + a3, started on day 1
        ("u3", DAY1): (1, 1),  # the late event's own session, dated by when it happened
        ("u4", DAY1): (1, 1),
        ("u1", DAY2): (2, 2),  # b1 + b2, whole only once day 3 is in
        ("u2", DAY2): (1, 1),
    }
    assert _sessions(spark, settings) == expected

    # Re-running the middle day (day 3 already exists) must give the same table.
    report = sessionise_day(spark, settings, DAY2, SessionConfig())
    assert _sessions(spark, settings) == expected
    assert (report.session_events, report.sessions_started) == (5, 2)
    assert report.continued_from_previous_day == 2  # a2, a3


def test_a_session_longer_than_a_day_keeps_one_id_its_summary_goes_stale(spark, settings):
    """Events every 20 min from day 1 22:00 to day 3 01:00: one 27-hour session, two midnights.

    ``silver/session_events`` gets it right: one ``session_id`` (of its first event) and
    ``seq_in_session`` 0..81 on every run and re-run. ``silver/sessions`` does not when the days
    run in order: day 3 continues a session whose first event is two partitions back, which
    ``_rewrite_summaries`` never reads nor rewrites (it summarises from D-1's tail and rewrites
    partitions D-1 and D only), so the row keeps day 2's end. Re-running day 2 (day 3 present)
    repairs it: the result depends on run order. Known; see the xfail at the end.
    """
    start = dt.datetime(2026, 1, 1, 22, 0)
    times = [start + dt.timedelta(minutes=20 * i) for i in range(82)]
    assert times[-1] == dt.datetime(2026, 1, 3, 1, 0)
    for day in (DAY1, DAY2, DAY3):
        rows = [
            (f"x{i:03d}", "u9", f"t{i // 10}", "play_progress", ts, 60.0, None, None, "tv", "GB")
            + ("f", ts, day)
            for i, ts in enumerate(times)
            if ts.date() == day
        ]
        replace_partitions(
            spark.createDataFrame(rows, BRONZE_EVENTS),
            settings.table_path("bronze", "events"),
            day,
            schema=BRONZE_EVENTS,
        )
    events_path = settings.table_path("silver", "session_events")
    sessions_path = settings.table_path("silver", "sessions")

    def session_events():
        rows = read_partitions(spark, events_path, DAY1, DAY3).collect()
        return sorted((r["event_id"], r["session_id"], r["seq_in_session"]) for r in rows)

    def sessions():
        rows = read_partitions(spark, sessions_path, DAY1, DAY3).collect()
        return [
            (r["session_id"], r["event_date"], r["start_ts"], r["end_ts"])
            + (r["n_events"], r["n_titles"])
            for r in rows
        ]

    for day in (DAY1, DAY2, DAY3):
        sessionise_day(spark, settings, day, SessionConfig())
    session_id = hashlib.sha256(b"u9|x000").hexdigest()
    want_events = [(f"x{i:03d}", session_id, i) for i in range(82)]
    assert session_events() == want_events
    in_order = sessions()

    want = [(session_id, DAY1, start, times[-1], 82, 9)]  # titles t0..t8
    for day in (DAY3, DAY2):  # re-runs: same ids and numbers; day 2 sees day 3, so it is whole
        sessionise_day(spark, settings, day, SessionConfig())
        assert session_events() == want_events
    assert sessions() == want

    # Known gap: run in order, day 3's four events (x078..x081, one new title t8) are missing.
    if in_order == [(session_id, DAY1, start, dt.datetime(2026, 1, 2, 23, 40), 78, 8)]:
        pytest.xfail(
            "silver/sessions misses a session's events two or more partitions after its start"
        )
    assert in_order == want
