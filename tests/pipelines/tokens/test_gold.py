"""Gold on the lake: positions continue over days from ``gold/member_positions``, not a rescan."""

from __future__ import annotations

import datetime as dt
import shutil

from pipelines.lake import read_partitions
from pipelines.schemas import SESSION_EVENTS
from pipelines.tokens.gold import tokenise_day
from pipelines.tokens.interactions import TokenConfig

DAY1, DAY2, DAY3 = dt.date(2026, 1, 1), dt.date(2026, 1, 2), dt.date(2026, 1, 3)

# (event_id, user, title, ts); each member's events of a day form one session.
EVENTS = {
    DAY1: [
        ("a1", "u1", "t1", dt.datetime(2026, 1, 1, 20, 0)),
        ("a2", "u1", "t2", dt.datetime(2026, 1, 1, 20, 30)),
        ("b1", "u2", "t1", dt.datetime(2026, 1, 1, 9, 0)),
    ],
    DAY2: [("b2", "u2", "t3", dt.datetime(2026, 1, 2, 9, 0))],  # u1 sits this day out
    DAY3: [
        ("a3", "u1", "t3", dt.datetime(2026, 1, 3, 20, 30)),
        ("c1", "u3", "t1", dt.datetime(2026, 1, 3, 8, 0)),
    ],
}


def _tokenise(spark, settings, day):
    rows = [
        (eid, user, title, "play_progress", ts, 60.0, None, None, "tv", "GB", "f", ts, day)
        + (f"{user}-{day}", seq)
        for seq, (eid, user, title, ts) in enumerate(EVENTS[day])
    ]
    events = spark.createDataFrame(rows, SESSION_EVENTS)
    return tokenise_day(spark, settings, day, TokenConfig(), session_events=events)


def _tokens(spark, settings, day) -> dict[str, list[tuple[int, str, int]]]:
    """user -> [(position, title, gap_bucket)] of ``day``."""
    rows = read_partitions(spark, settings.table_path("gold", "interaction_tokens"), day)
    found: dict[str, list[tuple[int, str, int]]] = {}
    for r in rows.orderBy("user_id", "position").collect():
        found.setdefault(r["user_id"], []).append((r["position"], r["title_id"], r["gap_bucket"]))
    return found


def test_positions_continue_from_the_previous_days_member_positions(spark, settings):
    reports = [_tokenise(spark, settings, day) for day in (DAY1, DAY2, DAY3)]
    assert [r.positions_from for r in reports] == ["none", "previous day", "previous day"]

    positions = read_partitions(spark, settings.table_path("gold", "member_positions"), DAY2)
    # Day 2's partition carries u1 on although u1 had no token that day.
    assert {r["user_id"]: r["last_position"] for r in positions.collect()} == {"u1": 1, "u2": 1}

    day3 = _tokens(spark, settings, DAY3)
    # u1's third token follows its day-1 tokens; the gap (day 1 20:30 -> day 3 20:30, 48 h)
    # is measured from the day-1 token, so it is not a first-token bucket (0).
    assert [p for p, _, _ in day3["u1"]] == [2]
    assert day3["u1"][0][2] > 0
    assert day3["u3"] == [(0, "t1", 0)]  # a new member starts at 0 with the first-token bucket

    # Without the positions table (a lake from before it existed), one scan of the earlier
    # tokens gives the same tokens, and the chain starts again.
    shutil.rmtree(settings.table_path("gold", "member_positions"))
    assert _tokenise(spark, settings, DAY3).positions_from == "scan"
    assert _tokens(spark, settings, DAY3) == day3
    again = read_partitions(spark, settings.table_path("gold", "member_positions"), DAY3)
    assert {r["user_id"]: r["last_position"] for r in again.collect()} == {
        "u1": 2,
        "u2": 1,
        "u3": 0,
    }
