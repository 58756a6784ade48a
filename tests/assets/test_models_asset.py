"""``models/foundation`` on a two-day synthetic lake: trains before the day, registers a version."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import dagster as dg

from assets import models
from jobs.definitions import build_resources, defs
from pipelines.models import FoundationModel
from pipelines.sources.synthetic import PRESETS, generate
from pipelines.tokens.tokenizer import InteractionTokenizer

START = dt.date(2026, 1, 1)
PARTITION = "2026-01-02"  # trains on day 1 only, while day 2 is in the lake too
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
TINY = {"model_preset": "tiny", "train_preset": "tiny", "max_steps": 12}


def _materialize(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [models.foundation],
        partition_key=PARTITION,
        resources=build_resources(),
        instance=instance,
        run_config={**QUIET, "ops": {"models__foundation": {"config": TINY}}},
    )


def test_foundation_trains_before_the_day_and_registers_a_challenger(reelfm_home: Path, spark):
    import mlflow

    generate(dataclasses.replace(PRESETS["tiny"], days=2), str(reelfm_home / "landing"))
    with dg.instance_for_test() as instance:
        daily = defs.resolve_job_def("daily_data")
        for offset in range(2):
            day = (START + dt.timedelta(days=offset)).isoformat()
            assert daily.execute_in_process(
                instance=instance, partition_key=day, run_config=QUIET
            ).success

        result = _materialize(instance)
        assert result.success
        metadata = result.get_asset_materialization_events()[0].materialization.metadata
        assert metadata["steps"].value == TINY["max_steps"]
        assert 0.0 <= metadata["val_hit_at_10"].value <= 1.0
        assert metadata["loss_curve"].value.startswith("![loss curves](data:image/png;base64,")

        mlflow.set_tracking_uri(f"sqlite:///{reelfm_home / 'mlflow.db'}")
        client = mlflow.MlflowClient()
        challenger = client.get_model_version_by_alias("reelfm-foundation", "challenger")
        assert str(challenger.version) == str(metadata["model_version"].value) == "1"
        assert challenger.tags["dagster.partition"] == PARTITION
        assert challenger.tags["dagster.run_id"] == result.run_id
        run = client.get_run(challenger.run_id)
        assert run.data.tags["dagster.partition"] == PARTITION
        assert {"train/loss", "val/hit_at_10", "final_val/hit_at_10"} <= set(run.data.metrics)
        assert len(client.get_metric_history(run.info.run_id, "train/loss")) == TINY["max_steps"]
        assert run.data.params["model.d_model"] == "32"

        # The registered version is a complete Hugging Face folder over the day's vocabulary.
        folder = Path(mlflow.artifacts.download_artifacts("models:/reelfm-foundation@challenger"))
        tokenizer = InteractionTokenizer.load(folder)
        model = FoundationModel.from_pretrained(folder)
        assert model.num_titles == tokenizer.num_titles
        assert json.loads((folder / "config.json").read_text())["model_type"] == "reelfm-foundation"
        # Only day 1 was trained on: every member with two tokens before the day, last one held out.
        tokens = spark.read.format("delta").load(str(reelfm_home / "lake/gold/interaction_tokens"))
        assert tokens.where(tokens.event_date == PARTITION).count() > 0
        per_member = tokens.where(tokens.event_date < PARTITION).groupBy("user_id").count()
        counts = [row["count"] for row in per_member.collect() if row["count"] >= 2]
        assert metadata["members"].value == len(counts)
        assert metadata["train_tokens"].value == sum(counts) - len(counts)

        # Materializing the day again resumes from its finished checkpoint: no step is retrained,
        # the same weights become version 2.
        assert _materialize(instance).success
        again = client.get_model_version_by_alias("reelfm-foundation", "challenger")
        assert str(again.version) == "2"
        rerun = client.get_run(again.run_id).data.metrics
        assert "train/loss" not in rerun
        assert rerun["final_val/hit_at_10"] == run.data.metrics["final_val/hit_at_10"]
        assert (reelfm_home / "checkpoints/foundation" / PARTITION).is_dir()
