"""The temporal protocol on the lake, for ``eval/report``: a model version against the baselines.

For partition day ``D``: the interaction tokens of the days before ``D`` are the training data
and each member's history; each member's next titles on ``D`` (and the following
``target_days - 1`` days) are the targets. Everyone is scored on the same ``TemporalSplit``: the
registered foundation version (trained strictly before ``D`` by ``models/foundation``), its SASRec
ablation (titles only, trained here on the same tokens with the version's recorded recipe),
most-popular, most-popular-among-new (the cold-start floor), optionally Spark ALS, and, when the
lake came from the synthetic generator with a recorded config, the generator's oracle (the best
possible ranking), the oracle at the cut-off and the oracle from history (the best ranking
knowable before the day, and the best knowable from the members' histories: see
``pipelines.evaluation.oracle``). The catalogue is the lake's tokenizer, so titles added on or
after ``D`` are ranked too: the foundation model gives them metadata-only embeddings (its
cold-start path), and cold-start recall is reported for titles released on or after ``D``.

``read_evaluation_inputs`` is the Spark side (lake tables to pandas, the landing manifests to the
synthetic world), ``load_registered_version`` the registry side, and ``evaluate_day`` the pure
part tests call directly.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipelines.evaluation.baselines import (
    ALSConfig,
    ALSRecommender,
    MostPopular,
    MostPopularConfig,
    MostPopularNew,
)
from pipelines.evaluation.foundation import (
    FEATURE_ROWS,
    FoundationFitConfig,
    FoundationRecommender,
    TokenFeatures,
    sasrec,
)
from pipelines.evaluation.metrics import (
    COLD_START_K,
    MemberRecommender,
    RankedTargets,
    Recommender,
    rank_targets,
    summarise,
)
from pipelines.evaluation.oracle import OracleRecommender, WorldSource, read_world_source
from pipelines.evaluation.splits import (
    TemporalConfig,
    TemporalSplit,
    index_interactions,
    temporal_split,
)
from pipelines.lake import PARTITION_COLUMN, table_exists
from pipelines.models import PAD_INDEX, FoundationModel, SequenceBatch
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
    sasrec: bool = True  # also train the SASRec ablation with the version's recorded recipe
    oracle: bool = True  # also score the synthetic oracle when the lake has a known world


@dataclass(frozen=True)
class EvaluationInputs:
    """What the evaluation reads from the lake."""

    tokens: pd.DataFrame  # gold/interaction_tokens of every day before D + target_days
    titles: pd.DataFrame  # bronze/titles, the whole catalogue
    tokenizer: InteractionTokenizer  # the lake's vocabulary now (a superset of the model's)
    world: WorldSource  # the synthetic world the lake came from, or why there is none


def read_evaluation_inputs(
    spark: SparkSession, settings: Settings, day: dt.date, target_days: int = 1
) -> EvaluationInputs:
    """Tokens before ``day + target_days``, the catalogue, the tokenizer and the landing's
    synthetic world; raises when the day's own tokens (the targets) are not in the lake yet."""
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
    lake_days = [r[0] for r in tokens.select(PARTITION_COLUMN).distinct().collect()]
    return EvaluationInputs(
        tokens=tokens.select(*MODEL_TOKEN_COLUMNS).toPandas(),
        titles=spark.read.format("delta").load(titles_path).toPandas(),
        tokenizer=InteractionTokenizer.load(tokenizer_path(settings)),
        world=read_world_source(settings, lake_days),
    )


@dataclass(frozen=True)
class RegisteredVersion:
    """One registered foundation version, downloaded."""

    version: str  # the MLflow model version
    model: FoundationModel  # its weights, in eval mode
    tokenizer: InteractionTokenizer  # the vocabulary it was trained with
    recipe: Mapping[str, str] = field(default_factory=dict)  # its training run's MLflow params
    # (model_preset, train_preset, max_steps, seed, history_days): what the ablation repeats


def load_registered_version(name: str, partition: str) -> RegisteredVersion:
    """The newest version of ``name`` tagged ``dagster.partition = partition`` (the active
    MLflow registry) with its training run's parameters; raises when that partition registered
    none."""
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
    model = load_model_exactly(folder)
    recipe = client.get_run(newest.run_id).data.params if newest.run_id else {}
    return RegisteredVersion(
        str(newest.version), model, InteractionTokenizer.load(folder), dict(recipe)
    )


def load_model_exactly(folder: Path) -> FoundationModel:
    """``FoundationModel.from_pretrained(folder)`` in eval mode; raises when a weight is missing,
    unexpected or of another shape, where Hugging Face would only warn and initialise it at
    random (a version trained before the model's code changed would be scored as noise)."""
    model, info = FoundationModel.from_pretrained(folder, output_loading_info=True)
    stray = {
        kind: sorted(map(str, info[kind]))
        for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")
        if info.get(kind)
    }
    if stray:
        raise ValueError(
            f"the weights in {folder} do not fit the current FoundationModel ({stray}): the "
            "version was trained by another revision of the model code; retrain it "
            "(materialize models/foundation for its partition) before evaluating it"
        )
    return model.eval()


def sasrec_fit_config(recipe: Mapping[str, str]) -> FoundationFitConfig:
    """The SASRec ablation of a version trained with ``recipe`` (its run's parameters): the same
    size and loop presets, step budget and seed, titles only."""
    missing = [key for key in ("model_preset", "train_preset") if key not in recipe]
    if missing:
        raise LookupError(
            f"the version's training run has no {missing} parameters, so its SASRec ablation "
            "cannot repeat its recipe: evaluate with sasrec disabled"
        )
    overrides = {} if _absent(recipe.get("max_steps")) else {"max_steps": int(recipe["max_steps"])}
    fit = FoundationFitConfig(
        model_preset=recipe["model_preset"],
        train_preset=recipe["train_preset"],
        train_overrides=overrides,
        seed=0 if _absent(recipe.get("seed")) else int(recipe["seed"]),
    )
    return sasrec(fit)


def _absent(param: str | None) -> bool:
    return param is None or param == "None"


@dataclass(frozen=True)
class DayEvaluation:
    """Every model's test metrics on one day and the ranks behind them."""

    table: pd.DataFrame  # index: model; columns: metrics (METRIC_NAMES and counts)
    ranked: dict[str, RankedTargets]  # model -> ranks of its targets (for the report's plots)
    split: TemporalSplit  # the split every model was scored on
    notes: list[str] = field(default_factory=list)  # why a model is absent, what the oracle is
    loss_histories: dict[str, list[float]] = field(default_factory=dict)  # models trained here


class PretrainedFoundation:
    """A registered ``FoundationModel`` scored per member, with that member's own token features.

    ``FoundationRecommender.from_pretrained`` finds a history's features by its titles alone,
    which fails when two members have the same titles with other features (at demo scale many
    one-title histories do); scored by member there is nothing to guess. Scores are the model's
    own ``recommend`` over the whole catalogue at the member's decision time (the first target's,
    which sets every title's freshness), so evaluation ranks what the model serves.
    """

    def __init__(
        self,
        model: FoundationModel,
        item_to_title: np.ndarray,
        features: TokenFeatures,
        name: str = "foundation",
    ) -> None:
        """``item_to_title`` (n_items,) maps item index to the model's title index;
        ``features``: the token features of the interactions splits are cut from."""
        self.model = model.eval()
        self.item_to_title = np.asarray(item_to_title, dtype=np.int64)
        self.features = features
        self.name = name

    def fit(self, split: TemporalSplit) -> None:
        """Nothing to learn: the version was trained before the cut-off by ``models/foundation``."""

    def score_members(
        self,
        users: np.ndarray,
        histories: list[np.ndarray],
        seen: list[np.ndarray],
        at_ts: np.ndarray,
    ) -> np.ndarray:
        width = max(len(h) for h in histories)
        tokens = np.zeros((1 + FEATURE_ROWS, len(users), width), dtype=np.int64)  # (7, B, W)
        tokens[0] = PAD_INDEX  # row 0: titles; rows 1..6: the token features
        for b, (user, history, prefix) in enumerate(
            zip(users.tolist(), histories, seen, strict=True)
        ):
            tokens[0, b, : len(history)] = self.item_to_title[history]
            tokens[1:, b, : len(history)] = self.features.prefix(user, len(prefix), history)
        batch = SequenceBatch(*torch.from_numpy(tokens).unbind(0))
        n = self.model.num_titles
        when = torch.from_numpy(np.asarray(at_ts, dtype=np.int64))  # (B,) the request times
        ids, values = self.model.recommend(batch, k=n, exclude_seen=False, request_times=when)
        scores = torch.empty((len(users), n)).scatter_(1, ids, values)  # (B, N) by title index
        return scores[:, torch.from_numpy(self.item_to_title)].numpy()  # (B, n_items)


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
    model.set_title_metadata(meta.features, meta.age_days, meta.trained_mask, meta.series)
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
    popular = MostPopularConfig(window_days=config.most_popular_window_days)
    models: list[Recommender | MemberRecommender] = [
        PretrainedFoundation(model, item_to_title, features, name=model_name)
    ]
    notes = []
    if config.oracle:
        notes.append(inputs.world.note)
        if inputs.world.config is not None:
            models.append(OracleRecommender.from_config(inputs.world.config, features))
            models.append(
                OracleRecommender.from_config(inputs.world.config, features, at_cutoff=True)
            )
            models.append(
                OracleRecommender.from_config(inputs.world.config, features, inferred_taste=True)
            )
    ablation = None
    if config.sasrec:
        ablation = FoundationRecommender(sasrec_fit_config(version.recipe))
        models.append(ablation)
    models += [MostPopular(popular), MostPopularNew(popular)]
    if config.als:
        if spark is None:
            raise ValueError("config.als needs a SparkSession")
        models.append(ALSRecommender(spark, config.als_config))
    rows, ranked = {}, {}
    for recommender in models:
        recommender.fit(_training_window(split, version.recipe, recommender is ablation))
        ranked[recommender.name] = rank_targets(recommender, split.test, new_items=split.new_items)
        rows[recommender.name] = summarise(ranked[recommender.name], split.new_items)
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "model"
    n_new = int(np.count_nonzero(split.new_items))
    if 0 < n_new <= COLD_START_K:
        notes.append(
            f"only {n_new} titles are new (released on or after {day}): a list that puts them "
            f"first, as most-popular-among-new does, has every new-title target in its top "
            f"{COLD_START_K}, so its cold-start recall@{COLD_START_K} is 1 by construction "
            "(and every model's among the new titles); evaluate over more days to measure it"
        )
    losses = {ablation.name: ablation.loss_history} if ablation is not None else {}
    return DayEvaluation(table, ranked, split, notes, losses)


def _training_window(
    split: TemporalSplit, recipe: Mapping[str, str], ablation: bool
) -> TemporalSplit:
    """``split`` with training cut to the version's ``history_days`` for its ablation (the same
    training data as the version); every other model sees the whole split."""
    days = recipe.get("history_days")
    if not ablation or _absent(days):
        return split
    start = split.config.cutoff_ts - int(days) * 86_400
    return replace(split, train=split.train.subset(split.train.ts >= start))
