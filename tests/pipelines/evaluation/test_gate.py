"""The promotion gate against a real MLflow model registry on SQLite.

One registry for the module (creating the SQLite schema is the slow part); each test registers
its own model name.
"""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from pipelines.evaluation.gate import GateConfig, apply_gate


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> MlflowClient:
    folder = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_experiment("gate", artifact_location=(folder / "art").as_uri())
    return client


@pytest.fixture()
def model(registry: MlflowClient, request: pytest.FixtureRequest) -> str:
    """A fresh registered model named after the test."""
    name = f"reelfm-{request.node.name}"
    registry.create_registered_model(name)
    return name


def _new_version(client: MlflowClient, name: str, ndcg_metric: float | None = None) -> str:
    """Register a version from a fresh run; optionally log the run's ndcg_at_10."""
    experiment = client.get_experiment_by_name("gate").experiment_id
    run = client.create_run(experiment)
    if ndcg_metric is not None:
        client.log_metric(run.info.run_id, "ndcg_at_10", ndcg_metric)
    source = f"{run.info.artifact_uri}/model"
    return client.create_model_version(name, source=source, run_id=run.info.run_id).version


def _alias(client: MlflowClient, name: str, alias: str) -> str:
    return str(client.get_model_version_by_alias(name, alias).version)


def test_gate_sequence(registry: MlflowClient, model: str):
    config = GateConfig(tolerance=0.002)

    first = apply_gate(registry, model, _new_version(registry, model), score=0.050, config=config)
    assert first.promoted and first.previous_champion_version is None
    assert (first.champion_version, first.champion_ndcg) == ("1", 0.050)
    assert (
        _alias(registry, model, "champion") == "1" and _alias(registry, model, "challenger") == "1"
    )

    worse = apply_gate(registry, model, _new_version(registry, model), score=0.047, config=config)
    assert not worse.promoted
    assert (worse.champion_version, worse.champion_ndcg) == ("1", 0.050)
    assert (worse.challenger_version, worse.challenger_ndcg) == ("2", 0.047)
    assert "worse than" in worse.reason
    assert (
        _alias(registry, model, "champion") == "1" and _alias(registry, model, "challenger") == "2"
    )
    assert registry.get_model_version(model, "2").tags["gate_decision"] == "held"

    # 0.049 is worse than 0.050, but by less than the tolerance: promoted.
    within = apply_gate(registry, model, _new_version(registry, model), score=0.049, config=config)
    assert within.promoted and within.previous_champion_version == "1"
    assert (
        _alias(registry, model, "champion") == "3" and _alias(registry, model, "challenger") == "3"
    )


def test_gate_reads_the_run_metric_when_no_score_is_given(registry: MlflowClient, model: str):
    apply_gate(registry, model, _new_version(registry, model), score=0.040)
    decision = apply_gate(registry, model, _new_version(registry, model, ndcg_metric=0.060))
    assert decision.promoted and decision.challenger_ndcg == pytest.approx(0.060)
    assert decision.champion_version == "2"


def test_gate_raises_without_a_score(registry: MlflowClient, model: str):
    version = _new_version(registry, model)
    with pytest.raises(ValueError, match="no 'ndcg_at_10'"):
        apply_gate(registry, model, version)
    with pytest.raises(ValueError, match="finite"):
        apply_gate(registry, model, version, score=float("nan"))
