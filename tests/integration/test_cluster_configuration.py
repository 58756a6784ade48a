"""The whole demo under a cluster's configuration, set by environment variables alone.

What a cluster swaps, each a real server here: a Spark standalone master and worker as their own
JVMs (pyspark's ``spark-class``), so the tasks run in an executor that is not the driver (jars
shipped to it, caches and checkpoints in another JVM); PostgreSQL behind both the MLflow
tracking server (started by ``infra/cluster/mlflow-server.sh`` itself, proxied artifacts, over
HTTP) and the Dagster instance (``infra/cluster/dagster.yaml``'s storage; its Kubernetes run
launcher left out); and the lake and landing as URIs, not folders. The run goes through
``reelfm demo`` in a child process, since this test process already holds the local Spark
session the other tests share.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pyspark
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]


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
def standalone_master(tmp_path: Path, free_port):
    """``spark://`` URL of a master with one 2-core worker, its web UI port and the work dir."""
    spark_class = Path(pyspark.__file__).parent / "bin" / "spark-class"
    env = {**os.environ, "SPARK_HOME": str(spark_class.parents[1]), "SPARK_LOCAL_IP": "127.0.0.1"}
    port, ui_port, worker_ui = free_port(), free_port(), free_port()
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


def _postgres_bin() -> Path | None:
    found = shutil.which("initdb") or next(
        iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)), None
    )
    return Path(found).resolve().parent if found else None  # /usr/local/bin links into it


@pytest.fixture()
def postgres(free_port):
    """A throwaway PostgreSQL server on a free port with databases ``mlflow`` and ``dagster``,
    user ``reelfm``, trusted on 127.0.0.1: ``{"port": …, "user": …}``."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL's server programs (initdb, pg_ctl) are not installed")
    # PostgreSQL refuses to run as root: as root, run it as the package's postgres user, in a
    # folder that user owns (pytest's own temporary folders are closed to other users).
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="reelfm-pg-"))
    if as_owner:
        shutil.chown(folder, "postgres")
    port, data = free_port(), folder / "data"
    ctl = [*as_owner, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "pg.log")]
    subprocess.run(
        [*as_owner, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "reelfm"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    subprocess.run([*ctl, "-w", "-o", options, "start"], check=True, capture_output=True)
    try:
        for database in ("mlflow", "dagster"):
            subprocess.run(
                [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "reelfm"]
                + [database],
                check=True,
                capture_output=True,
            )
        yield {"port": port, "user": "reelfm"}
    finally:
        subprocess.run([*ctl, "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture()
def mlflow_server(tmp_path: Path, postgres, free_port):
    """``http://`` URI of the MLflow server ``infra/cluster/mlflow-server.sh`` starts on the
    PostgreSQL above, and its (proxied) artifact store."""
    port, artifacts, log = free_port(), tmp_path / "mlflow-artifacts", tmp_path / "mlflow.log"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_PG_USER": postgres["user"],
        "MLFLOW_PG_PASSWORD": "",
        "MLFLOW_PG_HOST": "127.0.0.1",
        "MLFLOW_PG_PORT": str(postgres["port"]),
        "MLFLOW_PG_DB": "mlflow",
        "MLFLOW_ARTIFACTS_DESTINATION": str(artifacts),
        "MLFLOW_HOST": "127.0.0.1",
        "MLFLOW_PORT": str(port),
        "MLFLOW_WORKERS": "1",
    }
    server = subprocess.Popen(
        ["bash", str(REPO_ROOT / "infra/cluster/mlflow-server.sh")],
        env=env,
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
    tmp_path: Path, standalone_master, postgres, mlflow_server, spark, monkeypatch, run_reelfm
) -> None:
    import mlflow

    from pipelines.models.foundation import FoundationModel

    url, ui_port, work = standalone_master
    tracking_uri, server_artifacts = mlflow_server
    home, store = tmp_path / "home", tmp_path / "store"
    # The cluster's instance file without its Kubernetes run launcher: runs stay in-process.
    instance = yaml.safe_load((REPO_ROOT / "infra/cluster/dagster.yaml").read_text())
    del instance["run_launcher"]
    dagster_home = tmp_path / "dagster-home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(instance))
    env = {
        "REELFM_HOME": str(home),
        "REELFM_SPARK_MASTER": url,
        "REELFM_SPARK_DRIVER_MEMORY": "1g",
        "MLFLOW_TRACKING_URI": tracking_uri,
        "REELFM_LAKE_ROOT": (store / "lake").as_uri(),
        "REELFM_LANDING_ROOT": (store / "landing").as_uri(),
        "DAGSTER_HOME": str(dagster_home),
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": str(postgres["port"]),
        "DAGSTER_PG_USER": postgres["user"],
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_DB": "dagster",
    }
    run_reelfm(["demo", "--preset", "tiny"], env, drop=("REELFM_MLFLOW_ARTIFACT_ROOT",))

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

    # PostgreSQL holds the Dagster instance's runs and MLflow's registry.
    import psycopg2

    def query(database: str, sql: str) -> list[tuple]:
        connection = psycopg2.connect(
            host="127.0.0.1", port=postgres["port"], user=postgres["user"], dbname=database
        )
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql)
                return cursor.fetchall()
        finally:
            connection.close()

    jobs = query("dagster", "SELECT pipeline_name, status FROM runs ORDER BY create_timestamp")
    days = len(manifests)
    assert jobs == [("daily_data", "SUCCESS")] * days + [
        ("foundation_training", "SUCCESS"),
        ("evaluation", "SUCCESS"),
    ]
    assert query("mlflow", "SELECT name FROM registered_models") == [("reelfm-foundation",)]
