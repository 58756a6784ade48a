"""Bronze: the catalogue and the day's raw events, parsed, validated and deduplicated."""

import dagster as dg

from assets.partitions import daily_partitions, partition_day
from assets.resources import LakeResource, TrackingResource
from pipelines.ingest.bronze import ingest_events_day
from pipelines.ingest.rules import IngestRules
from pipelines.ingest.titles import upsert_titles
from pipelines.tracking import log_json_artifact, log_numbers

TITLES = dg.AssetKey(["bronze", "titles"])
EVENTS = dg.AssetKey(["bronze", "events"])
EVENTS_REJECTED = dg.AssetKey(["bronze", "events_rejected"])


class IngestConfig(dg.Config):
    """Per-run knobs of ``bronze/events``; defaults are ``IngestRules``'s."""

    lateness_allowance_hours: float = IngestRules.lateness_allowance_hours
    max_reject_rate: float = IngestRules.max_reject_rate
    max_duration_runtime_ratio: float = IngestRules.max_duration_runtime_ratio

    def rules(self) -> IngestRules:
        return IngestRules(
            lateness_allowance_hours=self.lateness_allowance_hours,
            max_reject_rate=self.max_reject_rate,
            max_duration_runtime_ratio=self.max_duration_runtime_ratio,
        )


@dg.asset(
    key=TITLES, partitions_def=daily_partitions, group_name="bronze", kinds={"spark", "delta"}
)
def titles(
    context: dg.AssetExecutionContext, lake: LakeResource, tracking: TrackingResource
) -> dg.MaterializeResult:
    """The catalogue: the latest landing snapshot on or before the day, upserted by ``title_id``."""
    with tracking.run(context, "bronze/titles") as run:
        report = upsert_titles(lake.spark(), lake.settings(), partition_day(context))
        log_numbers(
            {"received": report.received, "rejected": report.rejected, "rows": report.table_rows}
        )
    return dg.MaterializeResult(
        metadata={
            "snapshot_day": report.snapshot_day.isoformat(),
            "received": report.received,
            "rejected": report.rejected,
            "dagster/row_count": report.table_rows,
            "path": lake.settings().table_path("bronze", "titles"),
            "mlflow_run_id": run.info.run_id,
        }
    )


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            EVENTS,
            deps=[TITLES],
            description="Accepted events, one row per unique event_id.",
            kinds={"spark", "delta"},
        ),
        dg.AssetSpec(
            EVENTS_REJECTED,
            deps=[TITLES],
            description="Every rejected line with its reason, file and line number.",
            kinds={"spark", "delta"},
        ),
    ],
    check_specs=[
        dg.AssetCheckSpec(
            "reject_rate_below_threshold",
            asset=EVENTS,
            blocking=True,
            description="Fails (and stops downstream assets) when rejected / received exceeds max_reject_rate.",
        )
    ],
    partitions_def=daily_partitions,
    group_name="bronze",
)
def events(
    context: dg.AssetExecutionContext,
    config: IngestConfig,
    lake: LakeResource,
    tracking: TrackingResource,
):
    """Parse the day's landing files, validate (rules + Great Expectations), dedupe, write both tables."""
    rules = config.rules()
    day = partition_day(context)
    with tracking.run(context, "bronze/events", params=config.model_dump()) as run:
        report = ingest_events_day(lake.spark(), lake.settings(), day, rules)
        metadata = report.as_metadata()
        log_numbers({k: v for k, v in metadata.items() if not isinstance(v, dict)})
        log_numbers({f"rejected.{k}": v for k, v in report.rejects_by_reason.items()})
        log_json_artifact(report.validation.result, "ge_result.json")
    settings = lake.settings()
    yield dg.MaterializeResult(
        asset_key=EVENTS,
        metadata={
            **{k: v for k, v in metadata.items() if k != "rejects_by_reason"},
            "dagster/row_count": report.accepted,
            "rejects_by_reason": dg.MetadataValue.json(metadata["rejects_by_reason"]),
            "ge_failed_expectations": list(report.validation.failed_expectations),
            "path": settings.table_path("bronze", "events"),
            "mlflow_run_id": run.info.run_id,
        },
    )
    yield dg.MaterializeResult(
        asset_key=EVENTS_REJECTED,
        metadata={
            "dagster/row_count": report.rejected,
            "rejects_by_reason": dg.MetadataValue.json(metadata["rejects_by_reason"]),
            "path": settings.table_path("bronze", "events_rejected"),
        },
    )
    yield dg.AssetCheckResult(
        check_name="reject_rate_below_threshold",
        asset_key=EVENTS,
        passed=report.reject_rate <= rules.max_reject_rate,
        metadata={"reject_rate": report.reject_rate, "max_reject_rate": rules.max_reject_rate},
    )
