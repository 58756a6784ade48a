"""Two days with the lake and the landing on S3, chosen by environment variables alone.

The S3 API is moto's server on loopback; Spark reaches it through ``s3a://`` (``hadoop-aws``,
which ``spark_session`` adds for an ``s3a://`` root; Ivy fetches it and the AWS SDK bundle,
about 650 MB, the first time), the driver's own files through s3fs, both with the standard AWS
variables. The run goes through ``reelfm run`` in a child process: this test process holds the
shared local session, which has no ``hadoop-aws``.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipelines.sources.synthetic import PRESETS, generate


@pytest.fixture()
def s3_endpoint(tmp_path: Path, free_port):
    """The URL of an S3-compatible server (moto) on a free loopback port."""
    pytest.importorskip("moto", reason="moto[server] (a dev dependency) is not installed")
    pytest.importorskip("s3fs", reason="s3fs (a dev dependency) is not installed")
    port = free_port()
    log = tmp_path / "moto.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail(f"no S3 server: {log.read_text()[-2000:]}")
                time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_two_days_with_the_lake_and_landing_on_s3(
    tmp_path: Path, s3_endpoint, monkeypatch, run_reelfm
):
    import s3fs

    aws = {
        "AWS_ACCESS_KEY_ID": "reelfm",
        "AWS_SECRET_ACCESS_KEY": "reelfm",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_endpoint,  # s3fs (botocore) reads it; s3a is told below
    }
    for key, value in aws.items():
        monkeypatch.setenv(key, value)
    fs = s3fs.S3FileSystem()
    fs.mkdir("reelfm")
    config = dataclasses.replace(PRESETS["tiny"], days=2, bad_rate=0.01)
    summary = generate(config, str(tmp_path / "landing"))
    fs.put(f"{tmp_path / 'landing'}/", "reelfm/landing/", recursive=True)

    env = {
        **aws,
        "REELFM_HOME": str(tmp_path / "home"),
        "REELFM_LAKE_ROOT": "s3a://reelfm/lake",
        "REELFM_LANDING_ROOT": "s3a://reelfm/landing",
        "REELFM_SPARK_CONF__spark_hadoop_fs_s3a_endpoint": s3_endpoint,
        "REELFM_SPARK_CONF__spark_hadoop_fs_s3a_endpoint_region": "us-east-1",
        "REELFM_SPARK_CONF__spark_hadoop_fs_s3a_path_style_access": "true",
        "REELFM_SPARK_CONF__spark_hadoop_fs_s3a_connection_ssl_enabled": "false",
    }
    run = run_reelfm(
        ["run", "--start", "2026-01-01", "--days", "2"],
        env,
        drop=("MLFLOW_TRACKING_URI", "DAGSTER_HOME"),
    )

    # The command's summary counts each table where it lies: in the bucket.
    rows = {
        table: int(count)
        for table, count, where in re.findall(
            r"^\s+(\S+/\S+)\s+(\d+) rows\s+(\S+)$", run.stdout, re.M
        )
        if where == f"s3a://reelfm/lake/{table}"
    }
    assert rows["bronze/events"] + rows["bronze/events_rejected"] == (
        summary.events + summary.injected
    )
    assert rows["silver/session_events"] == rows["bronze/events"]
    assert 0 < rows["gold/interaction_tokens"] < rows["silver/session_events"]
    assert rows["bronze/titles"] == config.n_titles
    assert fs.exists("reelfm/lake/gold/interaction_tokens/_delta_log/00000000000000000000.json")
    assert fs.ls("reelfm/lake/gold/tokenizer") == ["reelfm/lake/gold/tokenizer/tokenizer.json"]
    assert not (tmp_path / "home" / "lake").exists()
