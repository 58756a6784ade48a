"""The whole demo under a cluster's configuration, set by environment variables alone.

Three things a cluster swaps, each a real server here: a Spark standalone master and worker as
their own JVMs (pyspark's ``spark-class``), so the tasks run in an executor that is not the
driver (jars shipped to it, caches and checkpoints in another JVM); an MLflow tracking server
over HTTP with proxied artifacts, as ``infra/cluster/mlflow-server.sh`` runs it (SQLite behind it
here, PostgreSQL there: the client cannot tell); and the lake and landing as URIs, not folders.
The run goes through ``reelfm demo`` in a child process, since this test process already holds
the local Spark session the other tests share.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyspark
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def _master_state(ui_port: int) -> dict:
    return _get_json(f"http://127.0.0.1:{ui_port}/json/")


def _wait_for(probe, process: subprocess.Popen, log: Path, what: str, seconds: float = 120):
    deadline = time.monotonic() + seconds
    while True:
        try:
            if probe():
                return
        except OSError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            pytest.fail(f"no {what}: {log.read_text()[-2000:]}")
        time.sleep(0.5)


@pytest.fixture()
def standalone_master(tmp_path: Path):
    """``spark://`` URL of a master with one 2-core worker, its web UI port and the work dir."""
    spark_class = Path(pyspark.__file__).parent / "bin" / "spark-class"
    env = {**os.environ, "SPARK_HOME": str(spark_class.parents[1]), "SPARK_LOCAL_IP": "127.0.0.1"}
    port, ui_port, worker_ui = _free_port(), _free_port(), _free_port()
    url, work = f"spark://127.0.0.1:{port}", tmp_path / "worker"
    logs = tmp_path / "daemon-logs"
    logs.mkdir()
    daemons = [
        subprocess.Popen(
            [str(spark_class), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1"]
            + ["--port", str(port), "--webui-port", str(ui_port)],
            env=env,
            stdout=(logs / "master.log").open("w"),
            stderr=subprocess.STDOUT,
        )
    ]
    try:
        _wait_for(lambda: _master_state(ui_port), daemons[0], logs / "master.log", "Spark master")
        daemons.append(
            subprocess.Popen(
                [str(spark_class), "org.apache.spark.deploy.worker.Worker", "--cores", "2"]
                + ["--memory", "2g", "--webui-port", str(worker_ui), "--work-dir", str(work), url],
                env=env,
                stdout=(logs / "worker.log").open("w"),
                stderr=subprocess.STDOUT,
            )
        )
        _wait_for(
            lambda: _master_state(ui_port)["aliveworkers"] >= 1,
            daemons[1],
            logs / "worker.log",
            "Spark worker",
        )
        yield url, ui_port, work
    finally:
        for daemon in reversed(daemons):
            daemon.terminate()
            daemon.wait(timeout=60)


@pytest.fixture()
def mlflow_server(tmp_path: Path):
    """``http://`` URI of an MLflow tracking server with proxied artifacts, and its artifact store."""
    port, artifacts, log = _free_port(), tmp_path / "mlflow-artifacts", tmp_path / "mlflow.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
        + ["--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow-server.db'}"]
        + ["--artifacts-destination", str(artifacts)],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: urllib.request.urlopen(f"{uri}/health", timeout=5), server, log, "MLflow")
        yield uri, artifacts
    finally:
        server.terminate()
        server.wait(timeout=60)


@pytest.mark.slow
def test_the_demo_on_a_cluster_configuration(
    tmp_path: Path, standalone_master, mlflow_server, spark, monkeypatch
) -> None:
    import mlflow

    from pipelines.models.foundation import FoundationModel

    url, ui_port, work = standalone_master
    tracking_uri, server_artifacts = mlflow_server
    home, store = tmp_path / "home", tmp_path / "store"
    env = {
        **os.environ,
        "REELFM_HOME": str(home),
        "REELFM_SPARK_MASTER": url,
        "REELFM_SPARK_DRIVER_MEMORY": "1g",
        "MLFLOW_TRACKING_URI": tracking_uri,
        "REELFM_LAKE_ROOT": (store / "lake").as_uri(),
        "REELFM_LANDING_ROOT": (store / "landing").as_uri(),
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    for name in ("DAGSTER_HOME", "REELFM_MLFLOW_ARTIFACT_ROOT"):
        env.pop(name, None)
    run = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "demo", "--preset", "tiny"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    # Spark: the application ran on the cluster, its tasks in the worker's executor.
    deadline = time.monotonic() + 60  # the master files the app as completed once it notices
    while not (apps := _master_state(ui_port)["completedapps"]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [(a["name"], a["state"]) for a in apps] == [("reelfm-dagster", "FINISHED")]
    executor_logs = list(work.glob("app-*/*/stderr"))
    assert executor_logs and "Finished task" in executor_logs[0].read_text()

    # The lake is where the URIs say, and nothing was lost on the way.
    def count(table: str) -> int:
        return spark.read.format("delta").load(str(store / "lake" / table)).count()

    manifests = sorted((store / "landing/events").glob("date=*/_injected.json"))
    received = sum(json.loads(m.read_text())["totals"]["lines"] for m in manifests)
    assert count("bronze/events") + count("bronze/events_rejected") == received
    assert count("silver/session_events") == count("bronze/events")
    assert not (home / "lake").exists() and not (home / "landing").exists()

    # MLflow: the runs, the model and its alias are on the server, the artifacts in its store
    # (none left on this machine), and another client pulls the champion over HTTP.
    assert not (home / "mlartifacts").exists()
    assert any(server_artifacts.rglob("model.safetensors"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    champion = mlflow.MlflowClient().get_model_version_by_alias("reelfm-foundation", "champion")
    assert champion.source.startswith("mlflow-artifacts:")
    folder = mlflow.artifacts.download_artifacts(
        "models:/reelfm-foundation@champion", dst_path=str(tmp_path / "pulled")
    )
    assert sorted(os.listdir(folder)) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert FoundationModel.from_pretrained(folder).num_titles == count("bronze/titles")
