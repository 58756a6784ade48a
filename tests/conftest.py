"""Shared fixtures: one real SparkSession (with Delta) for the whole test session, temporary homes.

Starting a JVM costs 10-20 s on two cores, so every test that needs Spark shares this one session.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipelines.settings import Settings

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture(scope="session")
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A REELFM_HOME for the whole test session (the Spark warehouse and derby live here)."""
    return tmp_path_factory.mktemp("reelfm-home")


@pytest.fixture(scope="session")
def spark(session_home: Path):
    from pipelines.spark_session import build_spark_session

    settings = Settings.from_env().with_home(session_home)
    os.environ.setdefault("REELFM_SPARK_SHUFFLE_PARTITIONS", "2")
    session = build_spark_session(settings, app_name="reelfm-tests")
    session.conf.set("spark.sql.shuffle.partitions", "2")
    yield session
    session.stop()


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    """Settings rooted in a fresh temporary home, so each test gets its own lake and MLflow store."""
    return Settings.from_env().with_home(tmp_path / "home")


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The real MovieLens files handed to the project; tests that need them skip when absent."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"shared MovieLens datasets not found at {SHARED_DATASETS}")
    return SHARED_DATASETS


@pytest.fixture()
def reelfm_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spark) -> Path:
    """A fresh REELFM_HOME the Dagster resources read from the environment (Spark stays shared)."""
    home = tmp_path / "home"
    monkeypatch.setenv("REELFM_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return home
