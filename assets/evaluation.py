"""Evaluation: the ``eval/report`` of the foundation version registered for a day, and the gate."""

import base64
import datetime as dt
import math
from pathlib import Path

import dagster as dg

from assets.gold import INTERACTION_TOKENS
from assets.models import FOUNDATION, REGISTERED_MODEL
from assets.partitions import daily_partitions, partition_day
from assets.resources import LakeResource, TrackingResource
from pipelines.evaluation.daily import (
    DayEvaluationConfig,
    evaluate_day,
    load_registered_version,
    read_evaluation_inputs,
)
from pipelines.evaluation.gate import GateConfig, apply_gate
from pipelines.evaluation.report import (
    bars_markdown,
    log_report,
    markdown_table,
    quality_bars,
    write_report,
)
from pipelines.tracking import log_numbers

EVAL_REPORT = dg.AssetKey(["eval", "report"])


class EvalReportConfig(dg.Config):
    """Per-run knobs of the evaluation; each maps onto ``DayEvaluationConfig`` or ``GateConfig``."""

    target_days: int = 1  # targets from the partition day and the next target_days - 1 days
    targets_per_user: int = 1  # each member's first k new titles in those days
    als: bool = True  # also fit Spark ALS as a baseline
    sasrec: bool = True  # also train the SASRec ablation with the version's recipe
    oracle: bool = True  # also score the synthetic generator's oracle when the lake has one
    gate_tolerance: float = 0.001  # NDCG@10 drop below the champion that is still promoted

    def evaluation(self) -> DayEvaluationConfig:
        return DayEvaluationConfig(
            target_days=self.target_days,
            targets_per_user=self.targets_per_user,
            als=self.als,
            sasrec=self.sasrec,
            oracle=self.oracle,
        )


@dg.asset(
    key=EVAL_REPORT,
    # The model of day D trained before D; its targets are day D's tokens.
    deps=[FOUNDATION, INTERACTION_TOKENS],
    partitions_def=daily_partitions,
    group_name="evaluation",
    kinds={"pytorch", "mlflow"},
)
def eval_report(
    context: dg.AssetExecutionContext,
    config: EvalReportConfig,
    lake: LakeResource,
    tracking: TrackingResource,
) -> dg.MaterializeResult:
    """Score the day's foundation version against the baselines, report, and apply the gate."""
    from mlflow import MlflowClient

    day, partition = partition_day(context), context.partition_key
    settings, spark = lake.settings(), lake.spark()
    inputs = read_evaluation_inputs(spark, settings, day, config.target_days)
    with tracking.run(context, "eval/report", params=config.model_dump()) as run:
        version = load_registered_version(REGISTERED_MODEL, partition)
        result = evaluate_day(inputs, version, day, config.evaluation(), spark=spark)
        bars = quality_bars(result.table, "foundation")
        ratios = {name: float(r) for name, r in bars["ratio"].items() if math.isfinite(r)}
        folder = Path(settings.home) / "reports" / "eval" / partition
        paths = write_report(
            folder,
            result.table,
            ranked=result.ranked,
            item_release_ts=result.split.item_release_ts,
            loss_histories=result.loss_histories,
            title=f"{REGISTERED_MODEL} v{version.version} on {day} (trained before {day})",
            bars=bars,
            notes=result.notes,
        )
        log_report(paths.folder)
        for model, row in result.table.iterrows():
            log_numbers({f"{model}/{name}": value for name, value in row.items()})
        log_numbers({f"bars/{name}": ratio for name, ratio in ratios.items()})
        ndcg = float(result.table.loc["foundation", "ndcg_at_10"])
        decision = apply_gate(
            MlflowClient(), REGISTERED_MODEL, version.version, score=ndcg,
            config=GateConfig(tolerance=config.gate_tolerance),
        )  # fmt: skip
    bars_png = paths.plots["quality_bars"]
    return dg.MaterializeResult(
        metadata={
            "metrics": dg.MetadataValue.md(markdown_table(result.table)),
            "quality_bars": dg.MetadataValue.md(f"{bars_markdown(bars)}\n\n{_inline(bars_png)}"),
            **ratios,
            "notes": dg.MetadataValue.md("\n".join(f"- {note}" for note in result.notes)),
            "model_version": int(version.version),
            "ndcg_at_10": ndcg,
            "promoted": decision.promoted,
            "champion_version": int(decision.champion_version),
            "gate_reason": decision.reason,
            "evaluated_members": len(result.split.test),
            "report": dg.MetadataValue.path(str(paths.markdown)),
            "mlflow_run_id": run.info.run_id,
            "targets_from": dt.date.isoformat(day),
        }
    )


def _inline(png: Path) -> str:
    """Markdown that shows ``png`` in the Dagster UI (which cannot reach the report folder)."""
    return f"![{png.stem}](data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()})"
