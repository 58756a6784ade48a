"""Sessions across midnights on the lake: summaries of D-1 and D, late events, re-runs."""

from __future__ import annotations

import datetime as dt

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
