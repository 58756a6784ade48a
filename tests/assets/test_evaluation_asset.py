"""``eval/report`` on a three-day synthetic lake: scores day 3's version on day 3, gates it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from pathlib import Path

import dagster as dg
import pytest

from assets import evaluation, models
from jobs.definitions import build_resources, defs
from pipelines.evaluation.metrics import METRIC_NAMES
from pipelines.sources.synthetic import PRESETS, generate

START = dt.date(2026, 1, 1)
PARTITION = "2026-01-03"  # the model trains on days 1-2; the targets are day 3's tokens
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
TINY = {"model_preset": "tiny", "train_preset": "tiny", "max_steps": 12}


def _materialize(asset, instance: dg.DagsterInstance, partition: str, config: dict, **kwargs):
    name = asset.op.name
    return dg.materialize(
        [asset],
        partition_key=partition,
        resources=build_resources(),
        instance=instance,
        run_config={**QUIET, "ops": {name: {"config": config}}},
        **kwargs,
    )


def test_report_scores_the_days_version_and_makes_it_champion(reelfm_home: Path):
    import mlflow

    generate(dataclasses.replace(PRESETS["tiny"], days=3), str(reelfm_home / "landing"))
    with dg.instance_for_test() as instance:
        daily = defs.resolve_job_def("daily_data")
        for offset in range(3):
            day = (START + dt.timedelta(days=offset)).isoformat()
            assert daily.execute_in_process(
                instance=instance, partition_key=day, run_config=QUIET
            ).success
        assert _materialize(models.foundation, instance, PARTITION, TINY).success

        result = _materialize(evaluation.eval_report, instance, PARTITION, {})
        assert result.success
        metadata = result.get_asset_materialization_events()[0].materialization.metadata
        assert metadata["model_version"].value == 1
        assert metadata["promoted"].value is True
        assert metadata["evaluated_members"].value > 0
        assert "| foundation |" in metadata["metrics"].value
        assert "| most_popular |" in metadata["metrics"].value

        report = reelfm_home / "reports" / "eval" / PARTITION
        assert (report / "metrics.md").is_file() and (report / "metrics.html").is_file()
        assert (report / "ndcg_by_history_length.png").is_file()

        mlflow.set_tracking_uri(f"sqlite:///{reelfm_home / 'mlflow.db'}")
        client = mlflow.MlflowClient()
        champion = client.get_model_version_by_alias("reelfm-foundation", "champion")
        assert str(champion.version) == "1"
        ndcg = float(champion.tags["ndcg_at_10"])
        assert ndcg == pytest.approx(metadata["ndcg_at_10"].value)
        run = client.get_run(metadata["mlflow_run_id"].value)
        for model in ("foundation", "most_popular", "als"):
            for name in METRIC_NAMES[:6]:
                value = run.data.metrics[f"{model}/{name}"]
                assert math.isfinite(value) and 0.0 <= value <= 1.0
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
        assert "evaluation/metrics.md" in artifacts

        # Day 4 has no tokens yet: the report fails and says which day to materialize first.
        failed = _materialize(
            evaluation.eval_report, instance, "2026-01-04", {}, raise_on_error=False
        )
        assert not failed.success
        error = failed.get_step_failure_events()[0].event_specific_data.error.to_string()
        assert "Materialize the daily_data job for 2026-01-04" in error
