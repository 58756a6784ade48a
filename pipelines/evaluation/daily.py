"""The temporal protocol on the lake, for ``eval/report``: a model version against the baselines.

For partition day ``D``: the interaction tokens of the days before ``D`` are the training data
and each member's history; each member's next titles on ``D`` (and the following
``target_days - 1`` days) are the targets. Everyone is scored on the same ``TemporalSplit``: the
registered foundation version (trained strictly before ``D`` by ``models/foundation``),
most-popular, and optionally Spark ALS. The catalogue is the lake's tokenizer, so titles added on
or after ``D`` are ranked too: the foundation model gives them metadata-only embeddings (its
cold-start path), and cold-start recall is reported for titles released on or after ``D``.

``read_evaluation_inputs`` is the Spark side (lake tables to pandas), ``load_registered_version``
the registry side, and ``evaluate_day`` the pure part tests call directly.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipelines.evaluation.baselines import (
    ALSConfig,
    ALSRecommender,
    MostPopular,
    MostPopularConfig,
)
from pipelines.evaluation.foundation import FoundationRecommender, TokenFeatures
from pipelines.evaluation.metrics import RankedTargets, Recommender, rank_targets, summarise
from pipelines.evaluation.splits import (
    TemporalConfig,
    TemporalSplit,
    index_interactions,
    temporal_split,
)
from pipelines.lake import PARTITION_COLUMN, table_exists
from pipelines.models import FoundationModel
from pipelines.models.metadata import title_metadata
from pipelines.schemas import ACTIONS, DEVICES, MODEL_TOKEN_COLUMNS
from pipelines.settings import Settings
from pipelines.tokens.gold import tokenizer_path
from pipelines.tokens.tokenizer import InteractionTokenizer


@dataclass(frozen=True)
class DayEvaluationConfig:
    """What ``evaluate_day`` scores and how."""

    target_days: int = 1  # targets come from days D .. D + target_days - 1
    targets_per_user: int = 1  # each member's first k new titles in those days
    max_history: int = 200  # most recent tokens a model sees
    most_popular_window_days: float | None = 28.0  # most-popular counts the last N days
    als: bool = True  # also fit Spark ALS (one config, no grid: the lake is small per day)
    als_config: ALSConfig = ALSConfig(rank=16, max_iter=5)  # the one ALS setting


@dataclass(frozen=True)
class EvaluationInputs:
    """What the evaluation reads from the lake."""

    tokens: pd.DataFrame  # gold/interaction_tokens of every day before D + target_days
    titles: pd.DataFrame  # bronze/titles, the whole catalogue
    tokenizer: InteractionTokenizer  # the lake's vocabulary now (a superset of the model's)


def read_evaluation_inputs(
    spark: SparkSession, settings: Settings, day: dt.date, target_days: int = 1
) -> EvaluationInputs:
    """Tokens before ``day + target_days``, the catalogue and the tokenizer; raises when the
    day's own tokens (the targets) are not in the lake yet."""
    path = settings.table_path("gold", "interaction_tokens")
    titles_path = settings.table_path("bronze", "titles")
    if not table_exists(spark, path) or not table_exists(spark, titles_path):
        raise FileNotFoundError(
            f"gold/interaction_tokens or bronze/titles is missing under {settings.lake_root}: "
            f"materialize the daily_data job up to {day} first"
        )
    end = day + dt.timedelta(days=target_days)
    tokens = spark.read.format("delta").load(path).where(F.col(PARTITION_COLUMN) < F.lit(end))
    if tokens.where(F.col(PARTITION_COLUMN) >= F.lit(day)).limit(1).count() == 0:
        raise FileNotFoundError(
            f"no interaction tokens on {day}: there is nothing to evaluate against yet. "
            f"Materialize the daily_data job for {day} (the evaluation day) first"
        )
    return EvaluationInputs(
        tokens=tokens.select(*MODEL_TOKEN_COLUMNS).toPandas(),
        titles=spark.read.format("delta").load(titles_path).toPandas(),
        tokenizer=InteractionTokenizer.load(tokenizer_path(settings)),
    )


@dataclass(frozen=True)
class RegisteredVersion:
    """One registered foundation version, downloaded."""

    version: str  # the MLflow model version
    model: FoundationModel  # its weights, in eval mode
    tokenizer: InteractionTokenizer  # the vocabulary it was trained with


def load_registered_version(name: str, partition: str) -> RegisteredVersion:
    """The newest version of ``name`` tagged ``dagster.partition = partition`` (the active
    MLflow registry); raises when that partition registered none."""
    import mlflow

    client = mlflow.MlflowClient()
    versions = [
        v
        for v in client.search_model_versions(f"name = '{name}'")
        if v.tags.get("dagster.partition") == partition
    ]
    if not versions:
        raise LookupError(
            f"no version of {name} is tagged dagster.partition={partition}: "
            f"materialize models/foundation for {partition} first"
        )
    newest = max(versions, key=lambda v: int(v.version))
    folder = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{newest.version}"))
    model = FoundationModel.from_pretrained(folder).eval()
    return RegisteredVersion(str(newest.version), model, InteractionTokenizer.load(folder))


@dataclass(frozen=True)
class DayEvaluation:
    """Every model's test metrics on one day and the ranks behind them."""

    table: pd.DataFrame  # index: model; columns: metrics (METRIC_NAMES and counts)
    ranked: dict[str, RankedTargets]  # model -> ranks of its targets (for the report's plots)
    split: TemporalSplit  # the split every model was scored on


def token_features(tokens: pd.DataFrame) -> np.ndarray:
    """(6, N) int64 features of token rows in frame order: action, watch fraction bucket, gap
    bucket, device, hour, weekday (the ``SequenceBatch`` feature order)."""
    actions = tokens["action"].map({a: i for i, a in enumerate(ACTIONS)})
    devices = tokens["device"].fillna("unknown").map({d: i for i, d in enumerate(DEVICES)})
    if actions.isna().any() or devices.isna().any():
        raise ValueError("tokens hold actions or devices outside schemas.ACTIONS / DEVICES")
    return np.stack(
        [
            actions.to_numpy(np.int64),
            tokens["watch_fraction_bucket"].to_numpy(np.int64),
            tokens["gap_bucket"].to_numpy(np.int64),
            devices.to_numpy(np.int64),
            tokens["hour"].to_numpy(np.int64),
            tokens["weekday"].to_numpy(np.int64),
        ]
    )


def _release_ts(titles: pd.DataFrame) -> dict[str, float]:
    release = pd.to_datetime(titles["release_date"], errors="coerce", utc=True)
    seconds = (release - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return {
        str(t): float(s) for t, s in zip(titles["title_id"], seconds, strict=True) if not pd.isna(s)
    }


def _catalogue_model(
    version: RegisteredVersion,
    catalogue: list[str],
    titles: pd.DataFrame,
    day: dt.date,
) -> FoundationModel:
    """The version's model over the whole current catalogue: titles added since its training
    get metadata-only embeddings (the tokenizer only appends, so old title indices hold)."""
    model, known = version.model, version.tokenizer.title_ids
    if catalogue[: len(known)] != known:
        raise ValueError("the lake's tokenizer does not extend the model's: ids were renumbered")
    if len(catalogue) == model.num_titles:
        return model
    if not model.config.use_metadata:
        raise ValueError(
            f"{len(catalogue) - model.num_titles} titles are newer than the model, which has no "
            "metadata path to embed them; evaluate with the model's own catalogue"
        )
    trained = {known[i] for i in np.flatnonzero(model.title_trained.numpy())}
    meta = title_metadata(titles, catalogue, model.config.genres or [], day, trained)
    model.set_title_metadata(meta.features, meta.age_days, meta.trained_mask)
    return model


def evaluate_day(
    inputs: EvaluationInputs,
    version: RegisteredVersion,
    day: dt.date,
    config: DayEvaluationConfig = DayEvaluationConfig(),
    spark: SparkSession | None = None,
    model_name: str = "foundation",
) -> DayEvaluation:
    """Score ``version`` and the baselines on the members' next titles on ``day``.

    Raises when no member has both a history before ``day`` and a target on it.
    """
    catalogue = inputs.tokenizer.title_ids
    # Position order within a member; index_interactions keeps input order for equal ts.
    frame = inputs.tokens.sort_values(["user_id", "position"], kind="stable")
    frame = frame.assign(ts=pd.to_datetime(frame["ts"], utc=True))
    interactions = index_interactions(frame, catalogue=catalogue)
    features = TokenFeatures.from_frame(frame, interactions, token_features(frame))
    cutoff = pd.Timestamp(day, tz="UTC").timestamp()
    split = temporal_split(
        interactions,
        TemporalConfig(
            cutoff_ts=int(cutoff),
            targets_per_user=config.targets_per_user,
            max_history=config.max_history,
        ),
        release_ts=_release_ts(inputs.titles),
    )
    if len(split.test) == 0:
        raise ValueError(
            f"no member has both tokens before {day} and a new title on it: nothing to evaluate"
        )
    model = _catalogue_model(version, catalogue, inputs.titles, day)
    title_index = {title: i for i, title in enumerate(catalogue)}
    item_to_title = np.array([title_index[str(i)] for i in interactions.item_ids])
    models: list[Recommender] = [
        FoundationRecommender.from_pretrained(model, item_to_title, features, name=model_name),
        MostPopular(MostPopularConfig(window_days=config.most_popular_window_days)),
    ]
    if config.als:
        if spark is None:
            raise ValueError("config.als needs a SparkSession")
        models.append(ALSRecommender(spark, config.als_config))
    rows, ranked = {}, {}
    for recommender in models:
        recommender.fit(split)
        ranked[recommender.name] = rank_targets(recommender, split.test)
        rows[recommender.name] = summarise(ranked[recommender.name], split.new_items)
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "model"
    return DayEvaluation(table=table, ranked=ranked, split=split)
