"""Two synthetic days on a real Spark standalone cluster, chosen by ``REELFM_SPARK_MASTER`` alone.

A master and a worker run as their own JVMs (pyspark's ``spark-class``), so the tasks run in an
executor process that is not the driver: what a cluster changes (jars shipped to executors,
checkpoints and caches in another JVM, no shared memory with the driver) is exercised, with no
code path told about it. The run goes through the ``reelfm run`` command in a child process,
since this test process already holds the local session the other tests share.
"""

from __future__ import annotations

import dataclasses
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

from pipelines.sources.synthetic import PRESETS, generate

REPO_ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _master_state(ui_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=5) as response:
        return json.load(response)


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
        deadline = time.monotonic() + 120
        while True:
            try:
                _master_state(ui_port)
                break
            except OSError:
                if time.monotonic() > deadline or daemons[0].poll() is not None:
                    pytest.fail(f"no Spark master: {(logs / 'master.log').read_text()[-2000:]}")
                time.sleep(0.5)
        daemons.append(
            subprocess.Popen(
                [str(spark_class), "org.apache.spark.deploy.worker.Worker", "--cores", "2"]
                + ["--memory", "2g", "--webui-port", str(worker_ui), "--work-dir", str(work), url],
                env=env,
                stdout=(logs / "worker.log").open("w"),
                stderr=subprocess.STDOUT,
            )
        )
        while _master_state(ui_port)["aliveworkers"] < 1:
            if time.monotonic() > deadline or daemons[1].poll() is not None:
                pytest.fail(f"no Spark worker: {(logs / 'worker.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url, ui_port, work
    finally:
        for daemon in reversed(daemons):
            daemon.terminate()
            daemon.wait(timeout=60)


@pytest.mark.slow
def test_two_days_on_a_standalone_cluster(tmp_path: Path, standalone_master, spark) -> None:
    url, ui_port, work = standalone_master
    home = tmp_path / "home"
    config = dataclasses.replace(PRESETS["tiny"], days=2, bad_rate=0.01)
    summary = generate(config, str(home / "landing"))
    env = {
        **os.environ,
        "REELFM_HOME": str(home),
        "REELFM_SPARK_MASTER": url,
        "REELFM_SPARK_DRIVER_MEMORY": "1g",
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    for name in ("MLFLOW_TRACKING_URI", "DAGSTER_HOME", "REELFM_LAKE_ROOT", "REELFM_LANDING_ROOT"):
        env.pop(name, None)
    run = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "run", "--start", "2026-01-01", "--days", "2"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    # The application ran on the cluster, its tasks in the worker's executor.
    deadline = time.monotonic() + 60  # the master files the app as completed once it notices
    while not (apps := _master_state(ui_port)["completedapps"]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [(a["name"], a["state"]) for a in apps] == [("reelfm-dagster", "FINISHED")]
    executor_logs = list(work.glob("app-*/*/stderr"))
    assert executor_logs and "Finished task" in executor_logs[0].read_text()

    # And it wrote the same kind of lake as local[*] does: nothing lost, every event sessionised.
    def count(table: str) -> int:
        return spark.read.format("delta").load(str(home / "lake" / table)).count()

    assert count("bronze/events") + count("bronze/events_rejected") == (
        summary.events + summary.injected
    )
    assert count("silver/session_events") == count("bronze/events")
    assert 0 < count("gold/interaction_tokens") < count("silver/session_events")
    assert count("bronze/titles") == config.n_titles
