"""Models: the foundation model, pretrained on every interaction token before the partition day."""

import base64
from pathlib import Path

import dagster as dg

from assets.bronze import TITLES
from assets.gold import INTERACTION_TOKENS, TOKENIZER
from assets.partitions import daily_partitions, partition_day, previous_day
from assets.resources import LakeResource, TrackingResource
from pipelines.tracking import log_numbers, register_model_version
from pipelines.training.launch import run_pretraining
from pipelines.training.pretrain import MODEL_DIR, read_pretraining_inputs

FOUNDATION = dg.AssetKey(["models", "foundation"])
REGISTERED_MODEL = "reelfm-foundation"
"""MLflow registered model every materialization adds a version to."""


class FoundationTrainingConfig(dg.Config):
    """Per-run knobs of pretraining; each maps onto an argument of ``pretrain_foundation``."""

    model_preset: str = "demo"  # FoundationConfig size preset: tiny, demo or benchmark
    train_preset: str = "demo"  # TrainConfig preset of the same names
    history_days: int | None = None  # train on this many days before the partition; None: all
    max_steps: int | None = None  # optimizer steps instead of the preset's epochs; None: preset
    seed: int = 0  # model init, data order and every RNG of the run

    def train_overrides(self) -> dict[str, int]:
        return {} if self.max_steps is None else {"max_steps": self.max_steps}


@dg.asset(
    key=FOUNDATION,
    # Partition D trains on days strictly before D: it needs the data of D-1 (and so before).
    deps=[
        dg.AssetDep(key, partition_mapping=previous_day)
        for key in (INTERACTION_TOKENS, TOKENIZER, TITLES)
    ],
    partitions_def=daily_partitions,
    group_name="models",
    kinds={"pytorch", "mlflow"},
)
def foundation(
    context: dg.AssetExecutionContext,
    config: FoundationTrainingConfig,
    lake: LakeResource,
    tracking: TrackingResource,
) -> dg.MaterializeResult:
    """Pretrain on the tokens before the day; log the run and register a ``reelfm-foundation`` version.

    With ``REELFM_TRAIN_PROCESSES`` > 1 the training runs under ``torchrun`` (DDP) in that many
    worker processes; this process keeps the MLflow run and receives their per-step metrics.
    """
    import mlflow

    day, partition = partition_day(context), context.partition_key
    settings = lake.settings()
    home = Path(settings.home)
    inputs = read_pretraining_inputs(lake.spark(), settings, day, config.history_days)
    with tracking.run(context, "models/foundation", params=config.model_dump()) as run:
        result = run_pretraining(
            inputs.tokens,
            inputs.titles,
            inputs.tokenizer,
            day,
            config.model_preset,
            config.train_preset,
            output_dir=home / "models" / "foundation" / partition,
            log_metrics=log_numbers,
            seed=config.seed,
            train_overrides=config.train_overrides(),
            checkpoint_dir=home / "checkpoints" / "foundation" / partition,
            processes=settings.train_processes,
            log_line=context.log.info,
        )
        mlflow.log_params({**result.params(), "train.processes": settings.train_processes})
        log_numbers({f"final_val/{name}": value for name, value in result.validation.items()})
        mlflow.log_artifacts(str(result.model_dir), MODEL_DIR)
        mlflow.log_artifact(str(result.loss_curve), "plots")
        version = register_model_version(
            REGISTERED_MODEL,
            run.info.run_id,
            MODEL_DIR,
            tags={"dagster.partition": partition, "dagster.run_id": context.run.run_id},
            aliases=["challenger"],
        )
    png = base64.b64encode(result.loss_curve.read_bytes()).decode()
    return dg.MaterializeResult(
        metadata={
            "mlflow_run_id": run.info.run_id,
            "registered_model": REGISTERED_MODEL,
            "model_version": int(version.version),
            "model_uri": f"models:/{REGISTERED_MODEL}/{version.version}",
            **{f"val_{name}": round(value, 4) for name, value in result.validation.items()},
            "steps": result.train.steps,
            "train_processes": settings.train_processes,
            "stopped_early": result.train.stopped_early,
            "members": result.members,
            "train_tokens": result.train_tokens,
            "trained_titles": f"{result.trained_titles} of {result.model_config.num_titles}",
            "model_dir": dg.MetadataValue.path(str(result.model_dir)),
            "loss_curve": dg.MetadataValue.md(f"![loss curves](data:image/png;base64,{png})"),
        }
    )
