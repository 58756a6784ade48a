"""Dagster resources: the lake (settings + the shared SparkSession) and MLflow tracking.

Environments are resource sets, not code branches: the embedded default reads ``Settings`` from
the environment; a cluster deployment sets the same variables (or these fields) and nothing else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import dagster as dg
from pyspark.sql import SparkSession

from pipelines.settings import Settings
from pipelines.tracking import tracked_run


class LakeResource(dg.ConfigurableResource):
    """Where the lake lives and the Spark session that reads and writes it."""

    home: str | None = None
    """Overrides ``REELFM_HOME`` (and everything derived from it) for this deployment."""
    spark_master: str | None = None
    """Overrides ``REELFM_SPARK_MASTER`` (``local[*]``, ``spark://…``, ``k8s://…``, ``sc://…``)."""

    def settings(self) -> Settings:
        settings = Settings.from_env()
        if self.home:
            settings = settings.with_home(self.home)
        if self.spark_master:
            settings = dataclasses.replace(settings, spark_master=self.spark_master)
        return settings

    def spark(self) -> SparkSession:
        """The process's one SparkSession (created on first use, then reused by every step)."""
        from pipelines.spark_session import build_spark_session

        return build_spark_session(self.settings(), app_name="reelfm-dagster")


class TrackingResource(dg.ConfigurableResource):
    """MLflow: every materialization logs a run tagged with its Dagster run and partition."""

    home: str | None = None
    """Overrides ``REELFM_HOME`` for the default SQLite store; ``MLFLOW_TRACKING_URI`` wins if set."""

    def settings(self) -> Settings:
        settings = Settings.from_env()
        return settings.with_home(self.home) if self.home else settings

    @contextmanager
    def run(
        self,
        context: dg.AssetExecutionContext,
        name: str,
        params: Mapping[str, Any] | None = None,
    ) -> Iterator[Any]:
        tags = {
            "dagster.run_id": context.run.run_id,
            "dagster.asset": name,
            "dagster.partition": context.partition_key if context.has_partition_key else "",
        }
        run_name = f"{name}@{tags['dagster.partition']}" if tags["dagster.partition"] else name
        with tracked_run(self.settings(), run_name, tags, params) as run:
            yield run
