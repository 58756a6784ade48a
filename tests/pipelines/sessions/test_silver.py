"""Sessions across midnights on the lake: summaries of D-1 and D, late events, re-runs."""

from __future__ import annotations

import datetime as dt
import hashlib

from delta.tables import DeltaTable

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


def _write_bronze(spark, settings, events=EVENTS) -> None:
    for day in (DAY1, DAY2, DAY3):
        rows = [
            (eid, user, title, "play_progress", ts, 60.0, None, None, "tv", "GB", "f", ts, day)
            for eid, user, title, ts, arrival in events
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


def test_a_session_over_four_day_partitions_is_summarised_whole_in_any_run_order(spark, settings):
    """Events every 20 min from day 1 22:00 to day 4 01:00: one 51-hour session, three midnights.

    Run in order, day 3 continues a session whose first event is two partitions back and day 4
    one three back: each walks back to its start and rewrites day 1's row. Re-running day 2 or 3
    (later days present) walks forward as well. Every order gives the same two tables.
    """
    day4 = DAY3 + dt.timedelta(days=1)
    days = (DAY1, DAY2, DAY3, day4)
    start, nine = dt.datetime(2026, 1, 1, 22, 0), dt.datetime(2026, 1, 2, 9, 0)
    times = [start + dt.timedelta(minutes=20 * i) for i in range(154)]
    assert times[-1] == dt.datetime(2026, 1, 4, 1, 0)
    for day in days:
        rows = [
            (f"x{i:03d}", "u9", f"t{i // 10}", "play_progress", ts, 60.0, None, None, "tv", "GB")
            + ("f", ts, day)
            for i, ts in enumerate(times)
            if ts.date() == day
        ]
        if day == DAY2:  # a second member's short session on a day the long one spans
            rows.append(
                ("y0", "u8", "t1", "play_stop", nine, 60.0, None, None, "tv", "GB", "f", nine, day)
            )
        replace_partitions(
            spark.createDataFrame(rows, BRONZE_EVENTS),
            settings.table_path("bronze", "events"),
            day,
            schema=BRONZE_EVENTS,
        )
    events_path = settings.table_path("silver", "session_events")
    sessions_path = settings.table_path("silver", "sessions")

    def session_events():
        rows = read_partitions(spark, events_path, DAY1, day4).collect()
        return sorted((r["event_id"], r["session_id"], r["seq_in_session"]) for r in rows)

    def sessions():
        rows = read_partitions(spark, sessions_path, DAY1, day4).collect()
        return sorted(
            (r["session_id"], r["event_date"], r["start_ts"], r["end_ts"])
            + (r["n_events"], r["n_titles"])
            for r in rows
        )

    session_id = hashlib.sha256(b"u9|x000").hexdigest()
    want_events = [(f"x{i:03d}", session_id, i) for i in range(154)]
    want_events.append(("y0", hashlib.sha256(b"u8|y0").hexdigest(), 0))
    want = sorted(
        [
            (session_id, DAY1, start, times[-1], 154, 16),  # titles t0..t15
            (hashlib.sha256(b"u8|y0").hexdigest(), DAY2, nine, nine, 1, 1),
        ]
    )
    for day in days:
        sessionise_day(spark, settings, day, SessionConfig())
        assert session_events() == sorted(e for e in want_events if e[0] in _ids_up_to(day))
    assert sessions() == want
    for day in (DAY2, DAY3, DAY1, day4):  # re-runs, later days present
        sessionise_day(spark, settings, day, SessionConfig())
        assert session_events() == sorted(want_events)
        assert sessions() == want, f"after re-running {day}"


def _ids_up_to(day: dt.date) -> set[str]:
    """Event ids of the long-session test that have arrived by ``day``."""
    start = dt.datetime(2026, 1, 1, 22, 0)
    ids = {f"x{i:03d}" for i in range(154) if (start + dt.timedelta(minutes=20 * i)).date() <= day}
    return ids | ({"y0"} if day >= DAY2 else set())


def test_a_tail_session_the_day_does_not_continue_is_not_rewritten(spark, settings):
    """u5's session crosses the first midnight and is u5's last session of day 2, so it is in day
    3's tail; day 3 does not continue it (u5 comes back at noon). Its summary was made whole by
    day 2, so day 3 rewrites day 2..3 only: one commit, and day 1's partition is left alone."""
    events = [
        ("p1", "u5", "t1", dt.datetime(2026, 1, 1, 23, 50), DAY1),
        ("p2", "u5", "t2", dt.datetime(2026, 1, 2, 0, 10), DAY2),
        ("q1", "u5", "t3", dt.datetime(2026, 1, 3, 12, 0), DAY3),
        ("r1", "u6", "t1", dt.datetime(2026, 1, 3, 13, 0), DAY3),
    ]
    _write_bronze(spark, settings, events)
    sessions_path = settings.table_path("silver", "sessions")
    sessionise_day(spark, settings, DAY1, SessionConfig())
    sessionise_day(spark, settings, DAY2, SessionConfig())
    versions_before = DeltaTable.forPath(spark, sessions_path).history().count()
    report = sessionise_day(spark, settings, DAY3, SessionConfig())

    assert report.continued_from_previous_day == 0
    assert _sessions(spark, settings) == {
        ("u5", DAY1): (2, 2),  # p1 + p2, summarised whole by day 2
        ("u5", DAY3): (1, 1),
        ("u6", DAY3): (1, 1),
    }
    commits = DeltaTable.forPath(spark, sessions_path).history().orderBy("version").collect()
    assert len(commits) == versions_before + 1
    assert "2026-01-01" not in commits[-1]["operationParameters"]["predicate"]
