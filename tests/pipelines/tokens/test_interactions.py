"""Token merging and features on hand-built session events."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import functions as F

from pipelines.schemas import SESSION_EVENTS
from pipelines.tokens.interactions import TokenConfig, last_positions, merge_interactions

DAY = dt.date(2026, 1, 5)  # a Monday
T0 = dt.datetime(2026, 1, 5, 20, 0, 0)


def _session_events(spark, rows):
    """rows: (event_id, user, title, type, minutes after T0, position_seconds, rating, session)."""
    full = []
    for seq, (eid, user, title, etype, minutes, position, rating, session) in enumerate(rows):
        ts = T0 + dt.timedelta(minutes=minutes)
        full.append(
            (
                eid,
                user,
                title,
                etype,
                ts,
                None,
                position,
                rating,
                "tv",
                "GB",
                "f",
                ts,
                DAY,
                session,
                seq,
            )
        )
    return spark.createDataFrame(full, SESSION_EVENTS)


def _runtimes(spark):
    return spark.createDataFrame(
        [("film", 6000.0), ("short", 600.0)], "title_id string, runtime_seconds double"
    )


def test_consecutive_events_on_one_title_merge_into_one_token(spark):
    events = _session_events(
        spark,
        [
            ("1", "u1", "film", "play_start", 0, 0.0, None, "s1"),
            ("2", "u1", "film", "play_progress", 10, 600.0, None, "s1"),
            ("3", "u1", "film", "play_progress", 90, 5400.0, None, "s1"),
            ("4", "u1", "film", "complete", 100, 6000.0, None, "s1"),
            ("5", "u1", "short", "play_start", 101, 0.0, None, "s1"),
            ("6", "u1", "short", "play_stop", 102, 60.0, None, "s1"),
            ("7", "u1", "film", "rate", 103, None, 5.0, "s1"),
            # Same title as the previous token but a new session: a new token.
            ("8", "u1", "film", "add_to_list", 400, None, None, "s2"),
        ],
    )
    tokens = (
        merge_interactions(events, _runtimes(spark), None, TokenConfig())
        .orderBy("position")
        .collect()
    )
    assert [(t["position"], t["title_id"], t["action"], t["n_events"]) for t in tokens] == [
        (0, "film", "completed", 4),
        (1, "short", "abandoned", 2),
        (2, "film", "rated_high", 1),
        (3, "film", "listed", 1),
    ]
    assert [t["watch_fraction_bucket"] for t in tokens] == [5, 2, 0, 0]
    # 0: first token; 101 min → floor(log2(101)) + 2 = 8; 2 min → 3; 297 min → 10.
    assert [t["gap_bucket"] for t in tokens] == [0, 8, 3, 10]
    assert tokens[0]["hour"] == 20 and tokens[0]["weekday"] == 0
    assert tokens[0]["ts"] == T0


def test_positions_and_gaps_continue_from_earlier_days(spark):
    earlier = spark.createDataFrame(
        [("u1", 6, T0 - dt.timedelta(minutes=30)), ("u1", 3, T0 - dt.timedelta(days=3))],
        "user_id string, position long, ts timestamp",
    )
    events = _session_events(
        spark,
        [
            ("1", "u1", "film", "play_start", 0, 0.0, None, "s1"),
            ("2", "u2", "short", "play_start", 0, 0.0, None, "s9"),
        ],
    )
    tokens = merge_interactions(events, _runtimes(spark), last_positions(earlier), TokenConfig())
    got = {r["user_id"]: (r["position"], r["gap_bucket"]) for r in tokens.collect()}
    # u1 continues at 7, 30 min after its last token → bucket floor(log2(30)) + 2 = 6; u2 is new.
    assert got == {"u1": (7, 6), "u2": (0, 0)}


def test_unknown_runtime_gives_unknown_watch_bucket(spark):
    events = _session_events(spark, [("1", "u1", "mystery", "play_progress", 0, 300.0, None, "s1")])
    token = merge_interactions(events, _runtimes(spark), None, TokenConfig()).first()
    assert token["watch_fraction_bucket"] == 0
    assert token["action"] == "started"
    assert (
        merge_interactions(events, None, None, TokenConfig()).where(F.col("position") == 0).count()
        == 1
    )
