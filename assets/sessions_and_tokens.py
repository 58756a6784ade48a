"""Silver and gold of one day in one asset step, so the day is shuffled by member only once.

Sessionisation and tokenisation both order each member's events in time; run together, gold
merges tokens from silver's cached, already partitioned events instead of reading and
re-shuffling ``silver/session_events``. The step is subsettable: selecting only the gold assets
(say, after changing a token threshold) tokenises from the stored silver table.
"""

from contextlib import ExitStack

import dagster as dg

from assets.gold import GOLD_SPECS, TokenisationConfig, gold_metrics, gold_results
from assets.partitions import daily_partitions, partition_day
from assets.resources import LakeResource, TrackingResource
from assets.silver import SILVER_SPECS, SessionisationConfig, silver_metrics, silver_results
from pipelines import storage
from pipelines.sessions.silver import sessionised_day
from pipelines.tokens.gold import tokenise_day
from pipelines.tokens.tokenizer import TOKENIZER_FILE
from pipelines.tracking import log_numbers


class SessionsAndTokensConfig(dg.Config):
    """Per-run knobs of both layers."""

    sessions: SessionisationConfig = SessionisationConfig()
    tokens: TokenisationConfig = TokenisationConfig()


@dg.multi_asset(
    specs=[*SILVER_SPECS, *GOLD_SPECS], partitions_def=daily_partitions, can_subset=True
)
def sessions_and_tokens(
    context: dg.AssetExecutionContext,
    config: SessionsAndTokensConfig,
    lake: LakeResource,
    tracking: TrackingResource,
):
    """Sessionise the day (midnight-crossing sessions kept whole), then merge it into tokens."""
    import mlflow

    spark, settings, day = lake.spark(), lake.settings(), partition_day(context)
    selected = context.selected_asset_keys
    with ExitStack() as keep_until_done:
        session_events = None  # gold reads silver from the lake unless silver ran here
        if selected & {spec.key for spec in SILVER_SPECS}:
            params = config.sessions.model_dump()
            with tracking.run(context, "silver/sessions", params=params) as run:
                report, session_events = keep_until_done.enter_context(
                    sessionised_day(spark, settings, day, config.sessions.session_config())
                )
                log_numbers(silver_metrics(report))
            if not report.previous_day_available:
                context.log.warning(
                    "No silver/session_events for the previous day: sessions crossing midnight "
                    "into this day start afresh."
                )
            yield from silver_results(report, run.info.run_id)
        if selected & {spec.key for spec in GOLD_SPECS}:
            params = config.tokens.model_dump()
            with tracking.run(context, "gold/interaction_tokens", params=params) as run:
                report = tokenise_day(
                    spark,
                    settings,
                    day,
                    config.tokens.token_config(),
                    session_events=session_events,
                )
                log_numbers(gold_metrics(report))
                # Read through pipelines.storage: the lake may be on object storage.
                mlflow.log_text(storage.read_text(report.tokenizer_path), TOKENIZER_FILE)
            yield from gold_results(report, run.info.run_id)
