"""Three synthetic days through the real ``Definitions``: Spark, Delta, GE and MLflow, in-process."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import dagster as dg

from jobs.definitions import defs
from pipelines.sources.synthetic import PRESETS, generate

START = dt.date(2026, 1, 1)
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _run(day: dt.date, instance: dg.DagsterInstance, run_config: dict | None = None):
    job = defs.resolve_job_def("daily_data")
    return job.execute_in_process(
        instance=instance,
        partition_key=day.isoformat(),
        run_config={**QUIET, **(run_config or {})},
        raise_on_error=False,
    )


def _counts(spark, home: Path) -> dict[str, int]:
    out = {}
    for table in (
        "bronze/events",
        "bronze/events_rejected",
        "silver/session_events",
        "silver/sessions",
        "gold/interaction_tokens",
    ):
        out[table] = spark.read.format("delta").load(str(home / "lake" / table)).count()
    return out


def test_three_days_rerun_is_identical_and_nothing_is_lost(reelfm_home: Path, spark):
    config = dataclasses.replace(PRESETS["tiny"], days=3, bad_rate=0.01)
    summary = generate(config, str(reelfm_home / "landing"))
    with dg.instance_for_test() as instance:
        for offset in range(3):
            assert _run(START + dt.timedelta(days=offset), instance).success
        first = _counts(spark, reelfm_home)

        # Every line received is either accepted or rejected, and the planted bad lines are rejected.
        assert (
            first["bronze/events"] + first["bronze/events_rejected"]
            == summary.events + summary.injected
        )
        assert first["bronze/events_rejected"] >= summary.injected * 0.9
        assert first["silver/session_events"] == first["bronze/events"]
        assert 0 < first["gold/interaction_tokens"] < first["silver/session_events"]

        assert _run(START + dt.timedelta(days=1), instance).success
        assert _counts(spark, reelfm_home) == first

        # Positions are 0..n-1 per member over the whole history: nothing skipped or doubled.
        tokens = spark.read.format("delta").load(str(reelfm_home / "lake/gold/interaction_tokens"))
        gaps = tokens.groupBy("user_id").agg(
            (dg_max := __import__("pyspark.sql.functions", fromlist=["max"]).max)("position").alias(
                "mx"
            ),
        )
        per_user = {r["user_id"]: r["mx"] for r in gaps.collect()}
        counts = {r["user_id"]: r["count"] for r in tokens.groupBy("user_id").count().collect()}
        assert all(per_user[u] == counts[u] - 1 for u in counts)
        del dg_max

        # Each materialization logged an MLflow run tagged with its partition.
        import mlflow

        mlflow.set_tracking_uri(f"sqlite:///{reelfm_home / 'mlflow.db'}")
        runs = mlflow.search_runs(
            experiment_names=["reelfm"], filter_string="tags.`dagster.asset` = 'bronze/events'"
        )
        assert sorted(runs["tags.dagster.partition"]) == [
            "2026-01-01",
            "2026-01-02",
            "2026-01-02",
            "2026-01-03",
        ]

    tokenizer = json.loads((reelfm_home / "lake/gold/tokenizer/tokenizer.json").read_text())
    assert len(tokenizer["model"]["vocab"]) == 64 + config.n_titles


def test_reject_rate_check_blocks_downstream(reelfm_home: Path, spark):
    config = dataclasses.replace(PRESETS["tiny"], days=1, bad_rate=0.2)
    generate(config, str(reelfm_home / "landing"))
    with dg.instance_for_test() as instance:
        result = _run(START, instance, {"ops": {"events": {"config": {"max_reject_rate": 0.05}}}})
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        assert checks == {"reject_rate_below_threshold": False}
        materialized = (
            {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
            if hasattr(result, "get_asset_materialization_events")
            else {
                m.asset_key.to_user_string()
                for m in result.asset_materializations_for_node("events")
            }
        )
        assert "bronze/events_rejected" in materialized
        # The blocking check stopped sessionisation and tokenisation for this day.
        assert not (reelfm_home / "lake/silver/session_events").exists()
        assert not (reelfm_home / "lake/gold/interaction_tokens").exists()


def test_lake_and_landing_given_as_uris(reelfm_home: Path, spark, monkeypatch):
    """Nothing reads the lake or the landing as a local folder: with both roots given as
    ``file://`` URIs (as an ``s3a://`` deployment gives them), the days run and the driver's own
    files (landing listings, catalogue snapshots, manifests, tokenizer.json) are found."""
    from pipelines.evaluation.daily import read_evaluation_inputs
    from pipelines.settings import Settings
    from pipelines.tokens.gold import tokenizer_path

    config = dataclasses.replace(PRESETS["tiny"], days=2, bad_rate=0.01)
    landing, lake = reelfm_home / "elsewhere/landing", reelfm_home / "elsewhere/lake"
    summary = generate(config, str(landing))
    monkeypatch.setenv("REELFM_LANDING_ROOT", landing.as_uri())
    monkeypatch.setenv("REELFM_LAKE_ROOT", lake.as_uri())
    settings = Settings.from_env()
    assert settings.lake_root.startswith("file:///")

    with dg.instance_for_test() as instance:
        for offset in range(2):
            assert _run(START + dt.timedelta(days=offset), instance).success

    def count(table: str) -> int:
        return spark.read.format("delta").load(settings.table_path(*table.split("/"))).count()

    received = count("bronze/events") + count("bronze/events_rejected")
    assert received == summary.events + summary.injected
    assert count("silver/session_events") == count("bronze/events")
    assert count("bronze/titles") == config.n_titles
    assert (lake / "gold/interaction_tokens/_delta_log").is_dir()
    assert not (reelfm_home / "lake").exists()  # nothing fell back to $REELFM_HOME/lake

    # What training and evaluation read on the driver: tokens, catalogue, tokenizer, manifests.
    assert tokenizer_path(settings).startswith("file:///")
    inputs = read_evaluation_inputs(spark, settings, START + dt.timedelta(days=1))
    assert inputs.tokenizer.num_titles == config.n_titles
    assert len(inputs.tokens) == count("gold/interaction_tokens")
    assert inputs.world.config is not None and inputs.world.config.seed == config.seed
