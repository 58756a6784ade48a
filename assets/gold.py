"""Gold: interaction tokens (the model's input) and the Hugging Face tokenizer of their vocabulary.

The specs, knobs and metadata live here; ``assets/sessions_and_tokens.py`` materializes them.
"""

import dagster as dg

from assets.bronze import TITLES
from assets.partitions import previous_day
from assets.silver import SESSION_EVENTS
from pipelines.tokens.gold import TokenReport
from pipelines.tokens.interactions import TokenConfig

INTERACTION_TOKENS = dg.AssetKey(["gold", "interaction_tokens"])
TOKENIZER = dg.AssetKey(["gold", "tokenizer"])

GOLD_SPECS = [
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
        group_name="gold",
        skippable=True,
    ),
    dg.AssetSpec(
        TOKENIZER,
        deps=[INTERACTION_TOKENS],
        description="tokenizer.json (Hugging Face tokenizers): special, action and title tokens, append-only.",
        kinds={"huggingface"},
        group_name="gold",
        skippable=True,
    ),
]


class TokenisationConfig(dg.Config):
    """Per-run knobs of tokenisation (thresholds of the action summary)."""

    completed_fraction: float = TokenConfig.completed_fraction
    abandoned_fraction: float = TokenConfig.abandoned_fraction
    high_rating: float = TokenConfig.high_rating
    low_rating: float = TokenConfig.low_rating

    def token_config(self) -> TokenConfig:
        return TokenConfig(**self.model_dump())


def gold_metrics(report: TokenReport) -> dict[str, float]:
    """The numbers logged to MLflow for one day's tokenisation."""
    return {
        "tokens": report.tokens,
        "members": report.members,
        "session_events": report.session_events,
        "events_per_token": report.events_per_token,
        "titles_added": report.titles_added,
        "vocab_size": report.vocab_size,
    }


def gold_results(report: TokenReport, mlflow_run_id: str) -> list[dg.MaterializeResult]:
    """One result for the tokens table and one for the tokenizer file."""
    return [
        dg.MaterializeResult(
            asset_key=INTERACTION_TOKENS,
            metadata={
                "dagster/row_count": report.tokens,
                "members": report.members,
                "events_per_token": round(report.events_per_token, 3),
                "actions": dg.MetadataValue.json(report.actions),
                # "previous day": continued from gold/member_positions; "scan": of every earlier day
                "positions_from": report.positions_from,
                "mlflow_run_id": mlflow_run_id,
            },
        ),
        dg.MaterializeResult(
            asset_key=TOKENIZER,
            metadata={
                "path": dg.MetadataValue.path(report.tokenizer_path),
                "vocab_size": report.vocab_size,
                "titles_added": report.titles_added,
            },
        ),
    ]
