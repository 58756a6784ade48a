"""One settings object from the environment: a cluster changes variables, not code."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.settings import Settings


def test_lake_and_landing_roots_may_be_uris(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("REELFM_HOME", str(tmp_path))
    monkeypatch.setenv("REELFM_LAKE_ROOT", "s3a://reelfm-prod/lake/")
    monkeypatch.setenv("REELFM_LANDING_ROOT", "s3a://reelfm-prod/landing")
    monkeypatch.setenv("REELFM_SPARK_CONF__spark_hadoop_fs_s3a_endpoint", "http://minio:9000")

    settings = Settings.from_env()

    assert settings.table_path("gold", "interaction_tokens") == (
        "s3a://reelfm-prod/lake/gold/interaction_tokens"
    )
    assert settings.landing_path("events", "2026-01-02") == (
        "s3a://reelfm-prod/landing/events/date=2026-01-02"
    )
    assert settings.spark_extra_conf == {"spark.hadoop.fs.s3a.endpoint": "http://minio:9000"}
    assert settings.dagster_home == str(tmp_path / "dagster")


def test_a_home_that_is_not_a_local_folder_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("REELFM_HOME", "s3a://reelfm-prod")
    with pytest.raises(ValueError, match="REELFM_LAKE_ROOT and REELFM_LANDING_ROOT"):
        Settings.from_env()


def test_spark_packages_keep_the_users_and_add_hadoop_aws_for_s3(tmp_path: Path, monkeypatch):
    from pipelines.spark_session import bundled_hadoop_version, extra_packages

    monkeypatch.setenv("REELFM_HOME", str(tmp_path))
    assert extra_packages(Settings.from_env()) == []  # a local lake needs nothing beside Delta

    monkeypatch.setenv("REELFM_SPARK_CONF__spark_jars_packages", "org.example:udfs:1.0")
    monkeypatch.setenv("REELFM_LANDING_ROOT", "s3a://reelfm-prod/landing")
    assert extra_packages(Settings.from_env()) == [
        "org.example:udfs:1.0",
        f"org.apache.hadoop:hadoop-aws:{bundled_hadoop_version()}",
    ]
    assert bundled_hadoop_version().count(".") == 2  # e.g. 3.5.0, the jar pyspark ships
