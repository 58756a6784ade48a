"""The pretraining recipe: interaction tokens before a cut-off day in, a Hugging Face folder out.

``pretrain_foundation`` is the whole recipe as one function: keep the tokens strictly before the
cut-off, turn them into per-member sequences over the tokenizer's title index, hold out each
member's last token for validation, describe every title by its metadata (ages measured at the
cut-off, so young titles lean on metadata), train on sliding windows with the shared loop
(early stopping on validation, checkpoints that resume) and write ``config.json``,
``model.safetensors`` and ``tokenizer.json`` into one folder, plus a loss-curve PNG. Under
``torchrun`` every rank calls it with the same inputs; they train data-parallel and rank 0 alone
writes (``pipelines.training.launch`` starts such a run from an ordinary process).
``read_pretraining_inputs`` is its Spark side: the lake tables and the tokenizer as pandas
frames and an ``InteractionTokenizer``, for the ``models/foundation`` asset.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipelines.lake import PARTITION_COLUMN, read_before, table_exists
from pipelines.models import FoundationConfig, FoundationModel, pretraining_loss
from pipelines.models.metadata import title_metadata
from pipelines.models.windows import (
    LastTokenDataset,
    UserSequences,
    WindowDataset,
    build_sequences,
    collate_windows,
    split_last_token,
)
from pipelines.schemas import MODEL_TOKEN_COLUMNS
from pipelines.settings import Settings
from pipelines.tokens.gold import tokenizer_path
from pipelines.tokens.tokenizer import TOKENIZER_FILE, InteractionTokenizer
from pipelines.training.loop import (
    TRAIN_PRESETS,
    DistributedContext,
    MetricsLogger,
    TrainConfig,
    TrainResult,
    evaluate,
    init_distributed,
    seed_everything,
    train,
)

logger = logging.getLogger(__name__)

MODEL_DIR = "model"
"""Sub-folder of ``output_dir`` holding the Hugging Face model and its tokenizer."""
CHECKPOINT_DIR = "checkpoints"
"""Sub-folder of ``output_dir`` for checkpoints when no ``checkpoint_dir`` is given."""
LOSS_CURVE_FILE = "loss_curves.png"
FINGERPRINT_FILE = "fingerprint.txt"
"""Written beside the checkpoints: what data and configs they were trained from."""

MetricHistory = dict[str, list[tuple[int, float]]]
"""Every metric the loop logged, by name (``train/loss``, ``val/hit_at_10``...): (step, value)."""


@dataclass(frozen=True)
class PretrainInputs:
    """What pretraining reads from the lake, as the recipe takes it."""

    tokens: pd.DataFrame  # gold/interaction_tokens rows of the days before the cut-off
    titles: pd.DataFrame  # bronze/titles, the whole catalogue
    tokenizer: InteractionTokenizer  # the shared vocabulary (title index = token id - 64)


def read_pretraining_inputs(
    spark: SparkSession, settings: Settings, cutoff: dt.date, history_days: int | None = None
) -> PretrainInputs:
    """Tokens of the day partitions strictly before ``cutoff`` (the last ``history_days`` of
    them when given), the catalogue and the tokenizer, collected to the driver."""
    tokens = read_before(spark, settings.table_path("gold", "interaction_tokens"), cutoff)
    titles_path = settings.table_path("bronze", "titles")
    if tokens is None or not table_exists(spark, titles_path):
        raise FileNotFoundError(
            f"gold/interaction_tokens or bronze/titles is missing under {settings.lake_root}: "
            f"materialize the daily_data job for the days before {cutoff} first"
        )
    if history_days is not None:
        if history_days < 1:
            raise ValueError(f"history_days must be at least 1, got {history_days}")
        first_day = cutoff - dt.timedelta(days=history_days)
        tokens = tokens.where(F.col(PARTITION_COLUMN) >= F.lit(first_day))
    return PretrainInputs(
        tokens=tokens.select(*MODEL_TOKEN_COLUMNS).toPandas(),
        titles=spark.read.format("delta").load(titles_path).toPandas(),
        tokenizer=InteractionTokenizer.load(tokenizer_path(settings)),
    )


@dataclass(frozen=True)
class PretrainResult:
    """Where a pretraining run put its outputs, and how well the saved weights do."""

    model: FoundationModel  # the saved weights, in eval mode
    model_dir: Path  # Hugging Face folder: config.json, model.safetensors, tokenizer.json
    loss_curve: Path  # PNG of training/validation loss and validation HR@10 against step
    checkpoint_dir: Path  # where the run's checkpoints are (a re-run with the same inputs resumes)
    validation: dict[str, float]  # saved weights on the held-out last tokens: the model's eval
    # outputs (loss, next_title_loss, hit_at_1, hit_at_10...) and most_popular_hit_at_10
    history: MetricHistory  # what the loop logged (after a resume: since then); rank 0 only
    train: TrainResult  # how the loop ended: steps, early stopping, best step
    model_config: FoundationConfig  # the resolved model config (preset + catalogue + overrides)
    train_config: TrainConfig  # the resolved loop config (preset + seed + overrides)
    members: int  # members with at least two tokens before the cut-off
    train_tokens: int  # tokens trained on (each member's last token is held out)
    trained_titles: int  # titles with interactions in the training tokens

    def params(self) -> dict[str, Any]:
        """The resolved configs as flat ``model.<field>`` / ``train.<field>`` run parameters."""
        model = {
            f"model.{name}": getattr(self.model_config, name)
            for name in FoundationConfig.__annotations__
            if name != "genres"  # the column order is in config.json; num_genres is its size
        }
        loop = {f"train.{k}": v for k, v in asdict(self.train_config).items()}
        return {**model, **loop}


def pretrain_foundation(
    tokens: pd.DataFrame,
    titles: pd.DataFrame,
    tokenizer: InteractionTokenizer,
    cutoff: dt.date,
    model_preset: str,
    train_preset: str,
    output_dir: Path,
    log_metrics: MetricsLogger | None = None,
    seed: int = 0,
    *,
    model_overrides: Mapping[str, Any] | None = None,
    train_overrides: Mapping[str, Any] | None = None,
    checkpoint_dir: Path | None = None,
) -> PretrainResult:
    """Pretrain a ``FoundationModel`` on the tokens with ``ts`` strictly before ``cutoff``.

    ``tokens`` are ``gold/interaction_tokens`` rows (later rows are dropped here, so the whole
    table may be passed), ``titles`` the ``bronze/titles`` catalogue with a row for every title
    of ``tokenizer``. The model is ``FoundationConfig.from_preset(model_preset)`` sized to the
    tokenizer and catalogue, with ``model_overrides``; the loop is ``TRAIN_PRESETS[train_preset]``
    with ``seed`` and ``train_overrides`` (e.g. ``{"max_steps": 50}``). ``log_metrics(metrics,
    step)`` receives every step's metrics. Checkpoints go to ``checkpoint_dir`` (default
    ``output_dir/checkpoints``): a killed run called again with the same inputs resumes there;
    checkpoints from different inputs or configs are discarded first.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every rank calls this with the same arguments: the
    process group lives for the whole call (joined here unless the caller already has one), the
    ranks train and validate data-parallel, and rank 0 alone claims the checkpoint folder and
    writes the model folder and the plot, the others waiting for it at a barrier. Every rank
    returns the same paths and validation; ``history`` and ``log_metrics`` are rank 0's.
    """
    ctx = init_distributed()
    try:
        return _pretrain(
            tokens,
            titles,
            tokenizer,
            cutoff,
            model_preset,
            train_preset,
            Path(output_dir),
            log_metrics,
            seed,
            model_overrides,
            train_overrides,
            checkpoint_dir,
            ctx,
        )
    finally:
        if ctx.owns_group:
            dist.destroy_process_group()


def _pretrain(
    tokens: pd.DataFrame,
    titles: pd.DataFrame,
    tokenizer: InteractionTokenizer,
    cutoff: dt.date,
    model_preset: str,
    train_preset: str,
    output_dir: Path,
    log_metrics: MetricsLogger | None,
    seed: int,
    model_overrides: Mapping[str, Any] | None,
    train_overrides: Mapping[str, Any] | None,
    checkpoint_dir: Path | None,
    ctx: DistributedContext,
) -> PretrainResult:
    cutoff_ts = pd.Timestamp(cutoff, tz="UTC")
    training = tokens[_utc(tokens["ts"]) < cutoff_ts]
    if training.empty:
        raise ValueError(f"no interaction tokens before the cut-off {cutoff}: nothing to train on")

    title_ids = tokenizer.title_ids
    sequences = build_sequences(training, {title: i for i, title in enumerate(title_ids)})
    train_sequences, validation = split_last_token(sequences)
    if len(validation) == 0:
        raise ValueError("no member has two tokens before the cut-off: nothing to validate on")
    counts = np.bincount(train_sequences.tokens[0], minlength=len(title_ids))  # (N,)

    genres = sorted({g for row in titles["genres"] if row is not None for g in row})
    metadata = title_metadata(
        titles, title_ids, genres, cutoff, {title_ids[i] for i in np.flatnonzero(counts)}
    )
    model_config = FoundationConfig.from_preset(
        model_preset,
        **{
            "num_titles": len(title_ids),
            "num_genres": len(genres),
            "genres": genres,
            "num_series": int(metadata.series.max()) + 1 if len(title_ids) else 0,
            **(model_overrides or {}),
        },
    )
    if train_preset not in TRAIN_PRESETS:
        raise ValueError(
            f"unknown train preset {train_preset!r}; choose one of {sorted(TRAIN_PRESETS)}"
        )
    train_config = replace(TRAIN_PRESETS[train_preset], seed=seed, **(train_overrides or {}))

    seed_everything(seed)
    model = FoundationModel(model_config)
    model.set_title_metadata(
        metadata.features, metadata.age_days, metadata.trained_mask, metadata.series
    )
    model.set_title_popularity(torch.from_numpy(counts))

    checkpoint_dir = Path(checkpoint_dir or output_dir / CHECKPOINT_DIR)
    if ctx.is_main:
        fingerprint = _fingerprint(training, model_config, train_config, cutoff)
        _claim_checkpoints(checkpoint_dir, fingerprint)
    _barrier(ctx)  # no rank looks for a checkpoint to resume before rank 0 has vetted them
    val_data = LastTokenDataset(validation, model_config.max_len)
    history: MetricHistory = {}

    def record(metrics: dict[str, float], step: int) -> None:
        for name, value in metrics.items():
            history.setdefault(name, []).append((step, value))
        if log_metrics is not None:
            log_metrics(metrics, step)

    outcome = train(
        model,
        pretraining_loss,
        WindowDataset(train_sequences, model_config.max_len, model_config.window_stride),
        train_config,
        collate_windows,
        val_data=val_data,
        checkpoint_dir=checkpoint_dir,
        log_metrics=record,
    )
    scores = evaluate(model, pretraining_loss, val_data, collate_windows, train_config, ctx)
    scores["most_popular_hit_at_10"] = _most_popular_hit_rate(counts, validation, k=10)
    model.eval()

    model_dir = output_dir / MODEL_DIR
    loss_curve = output_dir / LOSS_CURVE_FILE
    if ctx.is_main:
        shutil.rmtree(model_dir, ignore_errors=True)
        model.save_pretrained(model_dir)
        tokenizer.save(model_dir / TOKENIZER_FILE)
        plot_loss_curves(history, scores["most_popular_hit_at_10"], loss_curve)
    _barrier(ctx)  # every rank returns paths that exist
    return PretrainResult(
        model=model,
        model_dir=model_dir,
        loss_curve=loss_curve,
        checkpoint_dir=checkpoint_dir,
        validation=scores,
        history=history,
        train=outcome,
        model_config=model_config,
        train_config=train_config,
        members=len(validation),
        train_tokens=int(train_sequences.lengths.sum()),
        trained_titles=int(np.count_nonzero(counts)),
    )


def _barrier(ctx: DistributedContext) -> None:
    if ctx.world_size > 1:
        dist.barrier()


def _utc(ts: pd.Series) -> pd.Series:
    """``ts`` as tz-aware UTC; naive values are UTC already (the Spark session's time zone)."""
    ts = pd.to_datetime(ts)
    return ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")


def _most_popular_hit_rate(counts: np.ndarray, validation: UserSequences, k: int) -> float:
    """HR@k of recommending the k most-trained titles to everyone, on the held-out last tokens.

    Like the model's ``hit_at_10``, seen titles are not excluded, so the two compare directly.
    """
    top = np.argsort(-counts, kind="stable")[:k]  # (k,)
    targets = validation.tokens[0, validation.offsets[1:] - 1]  # (U,) each member's last title
    return float(np.isin(targets, top).mean())


def _fingerprint(
    training: pd.DataFrame,
    model_config: FoundationConfig,
    train_config: TrainConfig,
    cutoff: dt.date,
) -> str:
    """A digest of everything a checkpoint depends on: data, cut-off and both configs."""
    rows = training.sort_values(["user_id", "position"], kind="stable")[list(MODEL_TOKEN_COLUMNS)]
    digest = hashlib.sha256()
    digest.update(pd.util.hash_pandas_object(rows, index=False).to_numpy().tobytes())
    digest.update(cutoff.isoformat().encode())
    digest.update(model_config.to_json_string(use_diff=False).encode())
    # Every field that changes the weights, in order (a progress bar does not).
    digest.update(repr(replace(train_config, progress=False)).encode())
    return digest.hexdigest()


def _claim_checkpoints(checkpoint_dir: Path, fingerprint: str) -> None:
    """Keep ``checkpoint_dir`` for resuming only if it was written from the same fingerprint."""
    marker = checkpoint_dir / FINGERPRINT_FILE
    if checkpoint_dir.exists() and (not marker.exists() or marker.read_text() != fingerprint):
        logger.warning(
            "checkpoints in %s come from other data or configs; starting afresh", checkpoint_dir
        )
        shutil.rmtree(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(fingerprint)


def plot_loss_curves(history: MetricHistory, baseline_hit_at_10: float, path: Path) -> Path:
    """Training and validation loss, and validation HR@10 against the most-popular baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, hit_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, style in (("train/loss", "-"), ("val/loss", "o-")):
        if name in history:
            steps, values = zip(*history[name], strict=True)
            loss_ax.plot(steps, values, style, label=name, markersize=4)
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("loss")
    loss_ax.set_title("Pretraining loss")
    if "val/hit_at_10" in history:
        steps, values = zip(*history["val/hit_at_10"], strict=True)
        hit_ax.plot(steps, values, "o-", label="model", markersize=4)
    hit_ax.axhline(baseline_hit_at_10, color="grey", linestyle="--", label="most popular")
    hit_ax.set_xlabel("step")
    hit_ax.set_ylabel("HR@10")
    hit_ax.set_title("Validation (each member's last token)")
    for ax in (loss_ax, hit_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
