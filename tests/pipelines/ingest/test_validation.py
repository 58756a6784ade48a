"""The Great Expectations suite really gates: rows that break the contract make it fail."""

from __future__ import annotations

import datetime as dt

from pyspark.sql.types import StructField, StructType

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


def _witness_outcome(spark, frame):
    """The suite on the witness of ``frame`` (every row accepted), as bronze runs it."""
    from pyspark.sql import functions as F

    from pipelines.ingest.validation import validate_accepted_witness, witness_aggregates

    stats = frame.agg(F.count(F.lit(1)).alias("_n"), *witness_aggregates(F.lit(True))).first()
    return validate_accepted_witness(stats.asDict(), stats["_n"], frame, DAY, IngestRules())


def _plain(event_id: str, **changes):
    row = dict(zip(BRONZE_EVENTS.fieldNames(), _row(event_id), strict=True))
    row.update(changes)
    return tuple(row[name] for name in BRONZE_EVENTS.fieldNames())


def test_witness_decides_every_expectation_as_the_rows_do(spark):
    """One broken column at a time: GE on the three-row witness fails exactly where GE on the rows does."""
    cases = {
        "null id": {"user_id": None},
        "empty id": {"title_id": ""},
        "null event_ts": {"event_ts": None},
        "null source_file": {"source_file": None},
        "bad device": {"device": "toaster"},
        "too early": {"event_ts": dt.datetime(2026, 1, 1, 17, 59)},
        "too late": {"event_ts": dt.datetime(2026, 1, 3, 0, 0)},
        "negative position": {"position_seconds": -1.0},
        "rating above range": {"rating": 5.5},
    }
    # Nullable: the contract's non-null columns are what the suite checks.
    schema = StructType([StructField(f.name, f.dataType, True) for f in BRONZE_EVENTS.fields])
    good = spark.createDataFrame([_plain("a"), _plain("b", device=None)], schema)
    witness = _witness_outcome(spark, good)
    assert witness.success
    assert witness.result["validated_on"]["rows"] == 2
    for name, change in cases.items():
        frame = spark.createDataFrame([_plain("a"), _plain("b", **change)], schema)
        expected = validate_accepted_events(frame, DAY, IngestRules())
        outcome = _witness_outcome(spark, frame)
        assert not expected.success, name
        assert not outcome.success, name
        assert outcome.failed_expectations == expected.failed_expectations, name
