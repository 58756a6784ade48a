"""The Great Expectations suite for ``bronze/events``, run on the accepted rows of a day.

``rules.py`` rejects rows one by one with a reason; this suite then certifies the accepted side
as a whole (types, enums, non-empty ids, timestamps inside the day's window, durations and
ratings in range). ``event_id`` uniqueness is not re-checked here: the duplicate rule keeps
exactly one copy per id by construction, and GE's uniqueness check would sort the whole day. A failing suite after the row rules means the two disagree,
which is a bug to fix, so the caller fails the materialization rather than writing the day.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame

from pipelines.ingest.rules import REQUIRED_FIELDS, IngestRules
from pipelines.schemas import DEVICES, EVENT_TYPES


@dataclass(frozen=True)
class ValidationOutcome:
    """What GE said about one day: success, per-expectation counts, and the full JSON result."""

    success: bool
    evaluated: int
    failed_expectations: tuple[str, ...]
    result: dict[str, Any]


def bronze_events_suite(day: dt.date, rules: IngestRules):
    """The expectation suite for one partition day (the timestamp window depends on the day)."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    day_start = dt.datetime.combine(day, dt.time.min)
    window_start = day_start - dt.timedelta(hours=rules.lateness_allowance_hours)
    window_end = day_start + dt.timedelta(days=1) - dt.timedelta(microseconds=1)
    expectations = [
        *[gxe.ExpectColumnValuesToNotBeNull(column=name) for name in REQUIRED_FIELDS],
        gxe.ExpectColumnValuesToNotBeNull(column="source_file"),
        *[
            gxe.ExpectColumnValueLengthsToBeBetween(column=name, min_value=1)
            for name in ("event_id", "user_id", "title_id")
        ],
        gxe.ExpectColumnValuesToBeInSet(column="event_type", value_set=list(EVENT_TYPES)),
        gxe.ExpectColumnValuesToBeInSet(column="device", value_set=list(DEVICES)),
        gxe.ExpectColumnValuesToBeBetween(column="watch_seconds", min_value=0),
        gxe.ExpectColumnValuesToBeBetween(column="position_seconds", min_value=0),
        gxe.ExpectColumnValuesToBeBetween(
            column="rating", min_value=rules.rating_min, max_value=rules.rating_max
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="event_ts", min_value=window_start, max_value=window_end
        ),
    ]
    return gx.ExpectationSuite(name=f"bronze_events_{day.isoformat()}", expectations=expectations)


def validate_accepted_events(
    accepted: DataFrame, day: dt.date, rules: IngestRules
) -> ValidationOutcome:
    """Run the suite on ``accepted`` with an ephemeral GE context (nothing written to disk)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    # The asset logs its own progress; GE's per-metric bars would flood Dagster's compute logs.
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_spark(name="reelfm_lake")
        .add_dataframe_asset(name="bronze_events")
        .add_batch_definition_whole_dataframe("partition")
        .get_batch(batch_parameters={"dataframe": accepted})
    )
    suite = bronze_events_suite(day, rules)
    # BOOLEAN_ONLY needs ~9 Spark jobs against ~40 for SUMMARY; the details are only worth
    # paying for when something failed, so a failing suite is re-run for its unexpected values.
    result = batch.validate(suite, result_format="BOOLEAN_ONLY")
    if not result.success:
        result = batch.validate(suite, result_format="SUMMARY")
    payload = result.to_json_dict()
    failed = tuple(
        f"{r['expectation_config']['type']}({r['expectation_config']['kwargs'].get('column', '')})"
        for r in payload["results"]
        if not r["success"]
    )
    return ValidationOutcome(
        success=bool(result.success),
        evaluated=len(payload["results"]),
        failed_expectations=failed,
        result=payload,
    )
