"""The promotion gate against a real MLflow model registry on SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipelines.evaluation.gate import GateConfig, apply_gate

MODEL = "reelfm-foundation"


@pytest.fixture()
def client(tmp_path: Path) -> MlflowClient:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry = MlflowClient(tracking_uri=uri, registry_uri=uri)
    registry.create_experiment("gate", artifact_location=(tmp_path / "art").as_uri())
    registry.create_registered_model(MODEL)
    return registry


def _new_version(client: MlflowClient, ndcg_metric: float | None = None) -> str:
    """Register a version from a fresh run; optionally log the run's ndcg_at_10."""
    experiment = client.get_experiment_by_name("gate").experiment_id
    run = client.create_run(experiment)
    if ndcg_metric is not None:
        client.log_metric(run.info.run_id, "ndcg_at_10", ndcg_metric)
    source = f"{run.info.artifact_uri}/model"
    return client.create_model_version(MODEL, source=source, run_id=run.info.run_id).version


def _alias(client: MlflowClient, alias: str) -> str:
    return str(client.get_model_version_by_alias(MODEL, alias).version)


def test_gate_sequence(client: MlflowClient):
    config = GateConfig(tolerance=0.002)

    first = apply_gate(client, MODEL, _new_version(client), score=0.050, config=config)
    assert first.promoted and first.previous_champion_version is None
    assert (first.champion_version, first.champion_ndcg) == ("1", 0.050)
    assert _alias(client, "champion") == "1" and _alias(client, "challenger") == "1"

    worse = apply_gate(client, MODEL, _new_version(client), score=0.047, config=config)
    assert not worse.promoted
    assert (worse.champion_version, worse.champion_ndcg) == ("1", 0.050)
    assert (worse.challenger_version, worse.challenger_ndcg) == ("2", 0.047)
    assert "worse than" in worse.reason
    assert _alias(client, "champion") == "1" and _alias(client, "challenger") == "2"
    assert client.get_model_version(MODEL, "2").tags["gate_decision"] == "held"

    # 0.049 is worse than 0.050, but by less than the tolerance: promoted.
    within = apply_gate(client, MODEL, _new_version(client), score=0.049, config=config)
    assert within.promoted and within.previous_champion_version == "1"
    assert _alias(client, "champion") == "3" and _alias(client, "challenger") == "3"


def test_gate_reads_the_run_metric_when_no_score_is_given(client: MlflowClient):
    apply_gate(client, MODEL, _new_version(client), score=0.040)
    decision = apply_gate(client, MODEL, _new_version(client, ndcg_metric=0.060))
    assert decision.promoted and decision.challenger_ndcg == pytest.approx(0.060)
    assert decision.champion_version == "2"


def test_gate_raises_without_a_score(client: MlflowClient):
    version = _new_version(client)
    with pytest.raises(ValueError, match="no 'ndcg_at_10'"):
        apply_gate(client, MODEL, version)
    with pytest.raises(ValueError, match="finite"):
        apply_gate(client, MODEL, version, score=float("nan"))
