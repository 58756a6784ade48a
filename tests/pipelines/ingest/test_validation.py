"""The Great Expectations suite really gates: rows that break the contract make it fail."""

from __future__ import annotations

import datetime as dt

from pipelines.ingest.rules import IngestRules
from pipelines.ingest.validation import validate_accepted_events
from pipelines.schemas import BRONZE_EVENTS

DAY = dt.date(2026, 1, 2)
TS = dt.datetime(2026, 1, 2, 12, 0)


def _row(event_id: str, event_type: str = "play_start", watch: float | None = 5.0):
    return (event_id, "u1", "t1", event_type, TS, watch, None, None, "tv", "GB", "f", TS, DAY)


def test_suite_passes_on_contract_rows_and_names_what_fails(spark):
    good = spark.createDataFrame([_row("a"), _row("b")], BRONZE_EVENTS)
    assert validate_accepted_events(good, DAY, IngestRules()).success

    bad = spark.createDataFrame(
        [_row("a"), _row("c", event_type="teleport"), _row("d", watch=-1.0)], BRONZE_EVENTS
    )
    outcome = validate_accepted_events(bad, DAY, IngestRules())
    assert not outcome.success
    assert set(outcome.failed_expectations) == {
        "expect_column_values_to_be_in_set(event_type)",
        "expect_column_values_to_be_between(watch_seconds)",
    }
