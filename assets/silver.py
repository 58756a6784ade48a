"""Silver: sessions cut from each member's events (``silver/session_events`` + ``silver/sessions``)."""

import dagster as dg

from assets.bronze import EVENTS
from assets.partitions import daily_partitions, partition_day, previous_day
from assets.resources import LakeResource, TrackingResource
from pipelines.sessions.sessionise import SessionConfig
from pipelines.sessions.silver import sessionise_day
from pipelines.tracking import log_numbers

SESSION_EVENTS = dg.AssetKey(["silver", "session_events"])
SESSIONS = dg.AssetKey(["silver", "sessions"])


class SessionisationConfig(dg.Config):
    """Per-run knobs of sessionisation."""

    inactivity_gap_minutes: float = SessionConfig.inactivity_gap_minutes


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            SESSION_EVENTS,
            # The previous day's tail continues sessions that cross midnight.
            deps=[EVENTS, dg.AssetDep(SESSION_EVENTS, partition_mapping=previous_day)],
            description="Bronze events with session_id and seq_in_session.",
            kinds={"spark", "delta"},
        ),
        dg.AssetSpec(
            SESSIONS,
            deps=[SESSION_EVENTS],
            description="One row per session, partitioned by the day it started (D-1 and D rewritten).",
            kinds={"spark", "delta"},
        ),
    ],
    partitions_def=daily_partitions,
    group_name="silver",
)
def sessions(
    context: dg.AssetExecutionContext,
    config: SessionisationConfig,
    lake: LakeResource,
    tracking: TrackingResource,
):
    """Sessionise the day with an inactivity gap, keeping midnight-crossing sessions whole."""
    with tracking.run(context, "silver/sessions", params=config.model_dump()) as run:
        report = sessionise_day(
            lake.spark(),
            lake.settings(),
            partition_day(context),
            SessionConfig(**config.model_dump()),
        )
        log_numbers(
            {
                "session_events": report.session_events,
                "sessions_started": report.sessions_started,
                "continued_from_previous_day": report.continued_from_previous_day,
            }
        )
    if not report.previous_day_available:
        context.log.warning(
            "No silver/session_events for the previous day: sessions crossing midnight into this day start afresh."
        )
    yield dg.MaterializeResult(
        asset_key=SESSION_EVENTS,
        metadata={
            "dagster/row_count": report.session_events,
            "continued_from_previous_day": report.continued_from_previous_day,
            "previous_day_available": report.previous_day_available,
            "mlflow_run_id": run.info.run_id,
        },
    )
    yield dg.MaterializeResult(
        asset_key=SESSIONS, metadata={"sessions_started": report.sessions_started}
    )
