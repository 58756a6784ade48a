"""One MLflow logging path for every materialization and training run.

Each run is tagged with the Dagster run id, the asset and the partition, so a number in MLflow
leads back to the Dagster run that produced it and the other way round. The store is whatever
``Settings.mlflow_tracking_uri`` says: SQLite under ``REELFM_HOME`` by default, a tracking server
(PostgreSQL + object store) on a cluster.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from pipelines.settings import Settings


def configure_mlflow(settings: Settings) -> str:
    """Point MLflow at the settings' store and make sure the experiment exists; returns its id."""
    import mlflow

    if settings.mlflow_tracking_uri.startswith("sqlite:///"):
        os.makedirs(
            os.path.dirname(settings.mlflow_tracking_uri.removeprefix("sqlite:///")), exist_ok=True
        )
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    experiment = mlflow.get_experiment_by_name(settings.mlflow_experiment)
    if experiment is not None:
        return experiment.experiment_id
    location = settings.mlflow_artifact_root
    if not location:  # a tracking server: its own artifact store (proxied uploads)
        return mlflow.create_experiment(settings.mlflow_experiment)
    if "://" not in location:
        os.makedirs(location, exist_ok=True)
        location = f"file://{os.path.abspath(location)}"
    return mlflow.create_experiment(settings.mlflow_experiment, artifact_location=location)


@contextmanager
def tracked_run(
    settings: Settings,
    run_name: str,
    tags: Mapping[str, str],
    params: Mapping[str, Any] | None = None,
) -> Iterator[Any]:
    """Start an MLflow run with the given tags and params; yields the active run."""
    import mlflow

    experiment_id = configure_mlflow(settings)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=dict(tags)) as run:
        if params:
            mlflow.log_params({key: str(value)[:500] for key, value in params.items()})
        yield run


def log_numbers(metrics: Mapping[str, float | int | None], step: int | None = None) -> None:
    """Log the numeric, non-None entries of ``metrics`` to the active run."""
    import mlflow

    numeric = {
        key: float(value)
        for key, value in metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    if numeric:
        mlflow.log_metrics(numeric, step=step)


def log_json_artifact(payload: Mapping[str, Any], name: str) -> None:
    """Write ``payload`` as ``name`` (e.g. ``ge_result.json``) into the active run's artifacts."""
    import mlflow

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, name)
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, default=str)
        mlflow.log_artifact(path)


def run_url(settings: Settings, run: Any) -> str:
    """Where to look at a run: the server URL for a tracking server, the store URI otherwise."""
    uri = settings.mlflow_tracking_uri
    if uri.startswith("http"):
        return f"{uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    return f"{uri} (run {run.info.run_id}; open with `make mlflow-ui`)"


def register_model_version(
    name: str,
    run_id: str,
    artifact_path: str,
    tags: Mapping[str, str],
    aliases: Sequence[str] = (),
) -> Any:
    """Register run ``run_id``'s artifact folder ``artifact_path`` as a new version of ``name``.

    The folder is a plain Hugging Face model directory rather than an MLflow flavour, so the
    version is created from the run's artifact URI (MLflow 3's ``register_model`` only accepts
    logged models). The registered model is created on first use; each alias in ``aliases``
    moves to the new version. Returns the ``ModelVersion``; consumers download it with
    ``mlflow.artifacts.download_artifacts("models:/<name>@<alias>")``.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        client.create_registered_model(name)
    except MlflowException as error:
        # Another partition may have created it first; anything else is a real failure.
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{artifact_path}"
    version = client.create_model_version(name, source, run_id=run_id, tags=dict(tags))
    for alias in aliases:
        client.set_registered_model_alias(name, alias, version.version)
    return version
