"""The daily ``as_of`` partitions every asset shares, and the "previous day" mapping.

The first partition comes from ``REELFM_PARTITIONS_START`` (default 2026-01-01, where the
synthetic demo starts); MovieLens ml-100k users set it to 1997-09-20, for instance.
"""

from __future__ import annotations

import datetime as dt
import os

import dagster as dg

PARTITIONS_START = os.environ.get("REELFM_PARTITIONS_START", "2026-01-01")

daily_partitions = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC")

previous_day = dg.TimeWindowPartitionMapping(
    start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True
)
"""Day D depends on day D-1 of the same asset: Dagster then backfills days in order."""


def partition_day(context: dg.AssetExecutionContext) -> dt.date:
    """The partition being materialized, as a date."""
    return dt.date.fromisoformat(context.partition_key)
