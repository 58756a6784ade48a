"""``eval/report`` on a three-day synthetic lake: scores day 3's version on day 3 against its SASRec
ablation, the baselines and the generator's oracle, reports the quality bars, gates it; without
the generator's record of its world the oracle row is left out, with a note."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from pathlib import Path

import dagster as dg
import pytest

from assets import evaluation, models
from jobs.definitions import build_resources, defs
from pipelines.evaluation.metrics import METRIC_NAMES
from pipelines.evaluation.report import SYNTHETIC_BARS
from pipelines.sources.oracle import WORLD_KEY
from pipelines.sources.synthetic import MANIFEST_NAME, PRESETS, generate

START = dt.date(2026, 1, 1)
PARTITION = "2026-01-03"  # the model trains on days 1-2; the targets are day 3's tokens
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
TINY = {"model_preset": "tiny", "train_preset": "tiny", "max_steps": 12}
FAST = {"als": False, "sasrec": False}


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
        for model in (
            "foundation",
            "oracle",
            "oracle_at_cutoff",
            "oracle_from_history",
            "sasrec",
            "most_popular",
            "most_popular_new",
            "als",
        ):
            assert f"| {model} |" in metadata["metrics"].value
        # The oracle out-ranks most-popular, so the ratio to it is the smaller of the two.
        assert (
            0
            < metadata["ndcg_at_10_vs_oracle"].value
            < metadata["ndcg_at_10_vs_most_popular"].value
        )
        for bar in SYNTHETIC_BARS:
            assert f"| {bar.name} |" in metadata["quality_bars"].value
        assert "oracle: the generator's true choice model (seed 7" in metadata["notes"].value

        report = reelfm_home / "reports" / "eval" / PARTITION
        assert (report / "metrics.md").is_file() and (report / "metrics.html").is_file()
        assert (report / "ndcg_by_history_length.png").is_file()
        assert (report / "training_curves.png").is_file()  # the SASRec ablation trained here
        markdown = (report / "metrics.md").read_text()
        assert "| oracle |" in markdown and "## Quality bars" in markdown

        mlflow.set_tracking_uri(f"sqlite:///{reelfm_home / 'mlflow.db'}")
        client = mlflow.MlflowClient()
        champion = client.get_model_version_by_alias("reelfm-foundation", "champion")
        assert str(champion.version) == "1"
        ndcg = float(champion.tags["ndcg_at_10"])
        assert ndcg == pytest.approx(metadata["ndcg_at_10"].value)
        run = client.get_run(metadata["mlflow_run_id"].value)
        for model in ("foundation", "oracle", "sasrec", "most_popular", "als"):
            for name in METRIC_NAMES[:6]:
                value = run.data.metrics[f"{model}/{name}"]
                assert math.isfinite(value) and 0.0 <= value <= 1.0
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
        assert "evaluation/metrics.md" in artifacts

        # A landing the generator did not describe (MovieLens, another source): no oracle row.
        for manifest in (reelfm_home / "landing").glob(f"events/*/{MANIFEST_NAME}"):
            record = json.loads(manifest.read_text())
            del record[WORLD_KEY]
            manifest.write_text(json.dumps(record))
        unknown = _materialize(evaluation.eval_report, instance, PARTITION, FAST)
        metadata = unknown.get_asset_materialization_events()[0].materialization.metadata
        assert "| oracle |" not in metadata["metrics"].value
        assert "| oracle_at_cutoff |" not in metadata["metrics"].value
        assert "| oracle_from_history |" not in metadata["metrics"].value
        assert "ndcg_at_10_vs_oracle" not in metadata
        assert "oracle: not available" in metadata["notes"].value
        assert "| ndcg_at_10_vs_oracle |" in metadata["quality_bars"].value  # shown as n/a
        assert "\n| oracle |" not in (report / "metrics.md").read_text()

        # Day 4 has no tokens yet: the report fails and says which day to materialize first.
        failed = _materialize(
            evaluation.eval_report, instance, "2026-01-04", {}, raise_on_error=False
        )
        assert not failed.success
        error = failed.get_step_failure_events()[0].event_specific_data.error.to_string()
        assert "Materialize the daily_data job for 2026-01-04" in error
