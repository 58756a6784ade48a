"""Write one day of ``gold/interaction_tokens`` and extend the shared ``tokenizer.json``.

Reads the day's ``silver/session_events``, the catalogue's runtimes and each member's position
before the day, merges events into tokens (``interactions.py``), writes the day's partition and
appends any title it has not seen to the tokenizer (append-only: existing ids never move).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipelines.lake import (
    read_before,
    read_partitions,
    read_upstream_day,
    replace_partitions,
    table_exists,
)
from pipelines.schemas import INTERACTION_TOKENS
from pipelines.settings import Settings
from pipelines.tokens.interactions import (
    TokenConfig,
    compression,
    history_state_before,
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

    @property
    def events_per_token(self) -> float:
        return compression(self.session_events, self.tokens)


def tokenizer_path(settings: Settings) -> str:
    """Where the shared vocabulary lives: beside the gold tables."""
    return os.path.join(settings.table_path("gold", "tokenizer"), TOKENIZER_FILE)


def tokenise_day(
    spark: SparkSession, settings: Settings, day: dt.date, config: TokenConfig
) -> TokenReport:
    """Tokenise ``day``'s session events, continuing each member's positions from earlier days."""
    session_events = read_upstream_day(spark, settings.lake_root, "silver", "session_events", day)
    titles_path = settings.table_path("bronze", "titles")
    titles = (
        spark.read.format("delta").load(titles_path) if table_exists(spark, titles_path) else None
    )
    tokens_path = settings.table_path("gold", "interaction_tokens")
    before = read_before(spark, tokens_path, day)
    state = history_state_before(before) if before is not None else None

    tokens = merge_interactions(session_events, titles, state, config).withColumn(
        "event_date", F.lit(day)
    )
    replace_partitions(tokens, tokens_path, day, schema=INTERACTION_TOKENS)

    written = read_partitions(spark, tokens_path, day)
    summary = written.agg(
        F.count(F.lit(1)).alias("tokens"),
        F.countDistinct("user_id").alias("members"),
        F.sum("n_events").alias("events"),
    ).first()
    actions = {r["action"]: r["count"] for r in written.groupBy("action").count().collect()}
    title_ids = {r["title_id"] for r in written.select("title_id").distinct().collect()}
    if titles is not None:
        title_ids |= {r["title_id"] for r in titles.select("title_id").collect()}
    tokenizer, added = update_tokenizer_file(tokenizer_path(settings), sorted(title_ids))
    return TokenReport(
        day=day,
        session_events=int(summary["events"] or 0),
        tokens=int(summary["tokens"]),
        members=int(summary["members"]),
        titles_added=added,
        vocab_size=tokenizer.vocab_size,
        tokenizer_path=tokenizer_path(settings),
        actions=actions,
    )
