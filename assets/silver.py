"""Silver: sessions cut from each member's events (``silver/session_events`` + ``silver/sessions``).

The specs, knobs and metadata live here; ``assets/sessions_and_tokens.py`` materializes them
together with gold, so the day is shuffled by member once.
"""

import dagster as dg

from assets.bronze import EVENTS
from assets.partitions import previous_day
from pipelines.sessions.sessionise import SessionConfig
from pipelines.sessions.silver import SessionReport

SESSION_EVENTS = dg.AssetKey(["silver", "session_events"])
SESSIONS = dg.AssetKey(["silver", "sessions"])

SILVER_SPECS = [
    dg.AssetSpec(
        SESSION_EVENTS,
        # The previous day's tail continues sessions that cross midnight.
        deps=[EVENTS, dg.AssetDep(SESSION_EVENTS, partition_mapping=previous_day)],
        description="Bronze events with session_id and seq_in_session.",
        kinds={"spark", "delta"},
        group_name="silver",
        skippable=True,
    ),
    dg.AssetSpec(
        SESSIONS,
        deps=[SESSION_EVENTS],
        description="One row per session, partitioned by the day it started (D-1 and D rewritten).",
        kinds={"spark", "delta"},
        group_name="silver",
        skippable=True,
    ),
]


class SessionisationConfig(dg.Config):
    """Per-run knobs of sessionisation."""

    inactivity_gap_minutes: float = SessionConfig.inactivity_gap_minutes

    def session_config(self) -> SessionConfig:
        return SessionConfig(**self.model_dump())


def silver_metrics(report: SessionReport) -> dict[str, int]:
    """The numbers logged to MLflow for one day's sessionisation."""
    return {
        "session_events": report.session_events,
        "sessions_started": report.sessions_started,
        "continued_from_previous_day": report.continued_from_previous_day,
    }


def silver_results(report: SessionReport, mlflow_run_id: str) -> list[dg.MaterializeResult]:
    """One result per silver table, with the day's counts as metadata."""
    return [
        dg.MaterializeResult(
            asset_key=SESSION_EVENTS,
            metadata={
                "dagster/row_count": report.session_events,
                "continued_from_previous_day": report.continued_from_previous_day,
                "previous_day_available": report.previous_day_available,
                "mlflow_run_id": mlflow_run_id,
            },
        ),
        dg.MaterializeResult(
            asset_key=SESSIONS, metadata={"sessions_started": report.sessions_started}
        ),
    ]
