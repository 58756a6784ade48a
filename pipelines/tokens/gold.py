"""Write one day of ``gold/interaction_tokens`` and extend the shared ``tokenizer.json``.

Reads the day's ``silver/session_events``, the catalogue's runtimes and each member's position
before the day, merges events into tokens (``interactions.py``), writes the day's partition and
appends any title it has not seen to the tokenizer (append-only: existing ids never move).

Positions continue over a member's whole history. Instead of scanning every earlier token
partition each night (a cost that grows with the history), gold keeps a small
``gold/member_positions`` table: partition D holds every member's last position and time as of
the end of D, so day D+1 reads one partition of one row per member. Without the previous day's
partition (the first run, a gap, a lake from before the table existed) the earlier tokens are
scanned once and the chain starts again from there.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines import storage
from pipelines.lake import (
    detach,
    read_before,
    read_partitions,
    read_upstream_day,
    release,
    replace_partitions,
    table_exists,
    with_run_values,
)
from pipelines.schemas import INTERACTION_TOKENS, MEMBER_POSITIONS, SKIPPING_STATS
from pipelines.settings import Settings
from pipelines.tokens.interactions import (
    TokenConfig,
    compression,
    last_positions,
    merge_interactions,
)
from pipelines.tokens.tokenizer import TOKENIZER_FILE, update_tokenizer_file


@dataclass(frozen=True)
class TokenReport:
    """What one day's tokenisation wrote."""

    day: dt.date
    session_events: int
    tokens: int
    members: int
    titles_added: int
    vocab_size: int
    tokenizer_path: str
    actions: dict[str, int]
    positions_from: str  # "previous day" (gold/member_positions), "scan" or "none" (first day)

    @property
    def events_per_token(self) -> float:
        return compression(self.session_events, self.tokens)


def tokenizer_path(settings: Settings) -> str:
    """Where the shared vocabulary lives: beside the gold tables."""
    return storage.join(settings.table_path("gold", "tokenizer"), TOKENIZER_FILE)


def positions_before(
    spark: SparkSession, settings: Settings, day: dt.date
) -> tuple[DataFrame | None, str]:
    """Each member's last position and time before ``day``, and where they came from.

    The previous day's ``gold/member_positions`` partition when it exists (the nightly case);
    otherwise a scan of every token partition before ``day``; None before the first day.
    """
    previous = read_partitions(
        spark, settings.table_path("gold", "member_positions"), day - dt.timedelta(days=1)
    )
    if previous is not None and not previous.isEmpty():
        return previous.select("user_id", "last_position", "last_ts"), "previous day"
    before = read_before(spark, settings.table_path("gold", "interaction_tokens"), day)
    if before is None or before.isEmpty():
        return None, "none"
    return last_positions(before), "scan"


def tokenise_day(
    spark: SparkSession,
    settings: Settings,
    day: dt.date,
    config: TokenConfig,
    session_events: DataFrame | None = None,
) -> TokenReport:
    """Tokenise ``day``'s session events, continuing each member's positions from earlier days.

    ``session_events`` is the day's sessionised events when the caller already holds them
    (``sessionised_day`` keeps them cached and partitioned by member, so merging them into tokens
    needs no shuffle); otherwise the day is read from ``silver/session_events``.
    """
    if session_events is None:
        session_events = read_upstream_day(
            spark, settings.lake_root, "silver", "session_events", day
        )
    titles_path = settings.table_path("bronze", "titles")
    titles = (
        spark.read.format("delta").load(titles_path) if table_exists(spark, titles_path) else None
    )
    tokens_path = settings.table_path("gold", "interaction_tokens")
    state, positions_from = positions_before(spark, settings, day)
    if state is not None:
        # Read twice (to continue positions, to carry members on) and detached from the tables
        # written below, so that their writes do not make Spark recompute the cached tokens.
        state = detach(state)

    tokens = with_run_values(
        merge_interactions(session_events, titles, state, config), event_date=day
    ).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        replace_partitions(
            tokens,
            tokens_path,
            day,
            schema=INTERACTION_TOKENS,
            stats_columns=SKIPPING_STATS["gold/interaction_tokens"],
        )
        # Tokens stay partitioned by member, so this aggregate needs no shuffle.
        today = last_positions(tokens).persist()
        members = today.count()
        carried = today
        if state is not None:
            carried = today.unionByName(state.join(today, "user_id", "left_anti"))
        replace_partitions(
            with_run_values(carried, event_date=day),
            settings.table_path("gold", "member_positions"),
            day,
            schema=MEMBER_POSITIONS,
            stats_columns=SKIPPING_STATS["gold/member_positions"],
        )
        today.unpersist()
        by_action = (
            tokens.groupBy("action")
            .agg(F.count(F.lit(1)).alias("tokens"), F.sum("n_events").alias("events"))
            .collect()
        )
        actions = {r["action"]: int(r["tokens"]) for r in by_action}
        events = sum(int(r["events"]) for r in by_action)
        title_ids = {r["title_id"] for r in tokens.select("title_id").distinct().collect()}
    finally:
        tokens.unpersist()
        if state is not None:
            release(state)
    if titles is not None:
        title_ids |= {r["title_id"] for r in titles.select("title_id").collect()}
    tokenizer, added = update_tokenizer_file(tokenizer_path(settings), sorted(title_ids))
    return TokenReport(
        day=day,
        session_events=events,
        tokens=sum(actions.values()),
        members=members,
        titles_added=added,
        vocab_size=tokenizer.vocab_size,
        tokenizer_path=tokenizer_path(settings),
        actions=actions,
        positions_from=positions_from,
    )
