"""Gold: interaction tokens (the model's input) and the Hugging Face tokenizer of their vocabulary."""

import dagster as dg

from assets.bronze import TITLES
from assets.partitions import daily_partitions, partition_day, previous_day
from assets.resources import LakeResource, TrackingResource
from assets.silver import SESSION_EVENTS
from pipelines.tokens.gold import tokenise_day
from pipelines.tokens.interactions import TokenConfig
from pipelines.tracking import log_numbers

INTERACTION_TOKENS = dg.AssetKey(["gold", "interaction_tokens"])
TOKENIZER = dg.AssetKey(["gold", "tokenizer"])


class TokenisationConfig(dg.Config):
    """Per-run knobs of tokenisation (thresholds of the action summary)."""

    completed_fraction: float = TokenConfig.completed_fraction
    abandoned_fraction: float = TokenConfig.abandoned_fraction
    high_rating: float = TokenConfig.high_rating
    low_rating: float = TokenConfig.low_rating


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            INTERACTION_TOKENS,
            # Positions continue from earlier days, so days are tokenised in order.
            deps=[
                SESSION_EVENTS,
                TITLES,
                dg.AssetDep(INTERACTION_TOKENS, partition_mapping=previous_day),
            ],
            description="One row per interaction token; position counts over each member's whole history.",
            kinds={"spark", "delta"},
        ),
        dg.AssetSpec(
            TOKENIZER,
            deps=[INTERACTION_TOKENS],
            description="tokenizer.json (Hugging Face tokenizers): special, action and title tokens, append-only.",
            kinds={"huggingface"},
        ),
    ],
    partitions_def=daily_partitions,
    group_name="gold",
)
def interaction_tokens(
    context: dg.AssetExecutionContext,
    config: TokenisationConfig,
    lake: LakeResource,
    tracking: TrackingResource,
):
    """Merge consecutive events on one title into tokens and extend the vocabulary."""
    import mlflow

    with tracking.run(context, "gold/interaction_tokens", params=config.model_dump()) as run:
        report = tokenise_day(
            lake.spark(),
            lake.settings(),
            partition_day(context),
            TokenConfig(**config.model_dump()),
        )
        log_numbers(
            {
                "tokens": report.tokens,
                "members": report.members,
                "session_events": report.session_events,
                "events_per_token": report.events_per_token,
                "titles_added": report.titles_added,
                "vocab_size": report.vocab_size,
            }
        )
        mlflow.log_artifact(report.tokenizer_path)
    yield dg.MaterializeResult(
        asset_key=INTERACTION_TOKENS,
        metadata={
            "dagster/row_count": report.tokens,
            "members": report.members,
            "events_per_token": round(report.events_per_token, 3),
            "actions": dg.MetadataValue.json(report.actions),
            "mlflow_run_id": run.info.run_id,
        },
    )
    yield dg.MaterializeResult(
        asset_key=TOKENIZER,
        metadata={
            "path": dg.MetadataValue.path(report.tokenizer_path),
            "vocab_size": report.vocab_size,
            "titles_added": report.titles_added,
        },
    )
