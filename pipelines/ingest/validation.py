"""The Great Expectations suite for ``bronze/events``, run on the accepted rows of a day.

``rules.py`` rejects rows one by one with a reason; this suite then certifies the accepted side
as a whole (types, enums, non-empty ids, timestamps inside the day's window, durations and
ratings in range). ``event_id`` uniqueness is not re-checked here: the duplicate rule keeps
exactly one copy per id by construction, and GE's uniqueness check would sort the whole day. A
failing suite after the row rules means the two disagree, which is a bug to fix, so the caller
fails the materialization rather than writing the day.

Every expectation of the suite is decided by a column's extremes: whether it holds a null, its
shortest value's length, whether a value is outside the set, its minimum and maximum. Bronze
computes those in the same single aggregation pass that counts the day's reasons
(``witness_aggregates``) and GE then runs the suite on a *witness*: a three-row pandas frame
with those extremes (``witness_frame``), so each expectation passes on the witness if and only
if it passes on the day's rows, without one Spark job per expectation over two million rows. When the witness fails,
the suite is run again on the rows themselves (``validate_accepted_events``) for GE's real counts
and unexpected values.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

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
    """Run the suite on ``accepted`` (Spark) with an ephemeral GE context (nothing written to disk)."""
    # BOOLEAN_ONLY needs ~9 Spark jobs against ~40 for SUMMARY; the details are only worth
    # paying for when something failed, so a failing suite is re-run for its unexpected values.
    result = _run_suite(accepted, True, day, rules, "BOOLEAN_ONLY")
    if not result.success:
        result = _run_suite(accepted, True, day, rules, "SUMMARY")
    return _outcome(result)


_ID_COLUMNS = ("event_id", "user_id", "title_id")
_ENUMS = {"event_type": EVENT_TYPES, "device": DEVICES}
_RANGED = ("watch_seconds", "position_seconds", "rating", "event_ts")
_NOT_NULL = (*REQUIRED_FIELDS, "source_file")


def witness_aggregates(accepted: Column) -> list[Column]:
    """Aggregates (no grouping) over the rows where ``accepted`` holds, named ``_w_*``.

    They are what ``witness_frame`` needs: per column the count of nulls, the shortest id's
    length, the count of values outside the enum and of values at all, the minimum and maximum.
    All are numbers or timestamps on purpose: one string aggregate (the shortest id itself, any
    enum value) turns the whole pass into an aggregation without generated code, about 3x the
    CPU of the reasons' counts beside it.
    """
    out: list[Column] = [
        F.count_if(accepted & F.col(name).isNull()).alias(f"_w_nulls_{name}") for name in _NOT_NULL
    ]
    out += [
        F.min(F.when(accepted, F.length(name))).alias(f"_w_shortest_{name}") for name in _ID_COLUMNS
    ]
    for name, allowed in _ENUMS.items():
        out.append(F.count_if(accepted & ~F.col(name).isin(*allowed)).alias(f"_w_bad_{name}"))
        out.append(F.count_if(accepted & F.col(name).isNotNull()).alias(f"_w_some_{name}"))
    for name in _RANGED:
        out.append(F.min(F.when(accepted, F.col(name))).alias(f"_w_min_{name}"))
        out.append(F.max(F.when(accepted, F.col(name))).alias(f"_w_max_{name}"))
    return out


OUTSIDE_THE_SET = "<a value outside the set>"
"""The witness's stand-in for an enum value outside its set (the real ones: GE on the rows)."""


def witness_frame(stats: dict[str, Any]):
    """Three rows whose every suite expectation holds exactly when it holds on the day's rows.

    ``stats`` holds ``witness_aggregates``' values over at least one accepted row. Row 0 carries
    each column's minimum, an id of the shortest length and a value outside the set (when the
    rows have one), row 1 each maximum, row 2 a null in every required column that has nulls.
    The strings stand in for the real ones (only their length or membership is checked); when
    the witness fails, the suite runs on the rows themselves and reports their values.
    """
    import pandas as pd

    def with_null(name: str, value: Any) -> Any:
        return None if stats[f"_w_nulls_{name}"] else value

    columns: dict[str, list[Any]] = {}
    for name in _ID_COLUMNS:
        length = stats[f"_w_shortest_{name}"]
        shortest = None if length is None else "x" * length
        columns[name] = [shortest, shortest, with_null(name, shortest)]
    for name, allowed in _ENUMS.items():
        seen = allowed[0] if stats[f"_w_some_{name}"] else None
        first = OUTSIDE_THE_SET if stats[f"_w_bad_{name}"] else seen
        columns[name] = [first, seen, with_null(name, seen) if name in _NOT_NULL else seen]
    columns["source_file"] = ["source", "source", with_null("source_file", "source")]
    for name in _RANGED:
        low, high = stats[f"_w_min_{name}"], stats[f"_w_max_{name}"]
        columns[name] = [low, high, with_null(name, low) if name in _NOT_NULL else low]
    frame = pd.DataFrame(columns)
    for name in _RANGED:
        if name == "event_ts":
            frame[name] = pd.to_datetime(frame[name])
        else:
            frame[name] = frame[name].astype("float64")
    return frame


def _run_suite(batch_data: Any, spark: bool, day: dt.date, rules: IngestRules, result_format: str):
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    # The asset logs its own progress; GE's per-metric bars would flood Dagster's compute logs.
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = (
        context.data_sources.add_spark(name="reelfm_lake")
        if spark
        else context.data_sources.add_pandas(name="reelfm_witness")
    )
    batch = (
        source.add_dataframe_asset(name="bronze_events")
        .add_batch_definition_whole_dataframe("partition")
        .get_batch(batch_parameters={"dataframe": batch_data})
    )
    return batch.validate(bronze_events_suite(day, rules), result_format=result_format)


def _outcome(result: Any, extra: dict[str, Any] | None = None) -> ValidationOutcome:
    payload = result.to_json_dict()
    if extra:
        payload = {**payload, **extra}
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


def validate_accepted_witness(
    stats: dict[str, Any],
    accepted_rows: int,
    accepted: DataFrame,
    day: dt.date,
    rules: IngestRules,
) -> ValidationOutcome:
    """The suite on the witness of ``accepted`` (``stats``: ``witness_aggregates``' values).

    No accepted rows, or a failing witness: the suite runs on ``accepted`` itself (Spark), so a
    failure is reported with GE's real counts and unexpected values.
    """
    if accepted_rows == 0:
        return validate_accepted_events(accepted, day, rules)
    result = _run_suite(witness_frame(stats), False, day, rules, "SUMMARY")
    if not result.success:
        return validate_accepted_events(accepted, day, rules)
    return _outcome(
        result,
        {
            "validated_on": {
                "rows": accepted_rows,
                "how": "witness: per column its nulls, shortest id, out-of-set value, minimum "
                "and maximum over every accepted row, from one Spark aggregation "
                "(pipelines/ingest/validation.py)",
            }
        },
    )
