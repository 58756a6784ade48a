"""Helpers for the integration tests that run ``reelfm`` in a child process against servers.

This test process holds the local Spark session the other tests share, so a run against other
servers or jars is a ``python -m jobs.cli …`` child with its own environment.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def free_port() -> Callable[[], int]:
    """``free_port()``: a TCP port on 127.0.0.1 nobody listens on right now."""
    return _free_port


@pytest.fixture()
def run_reelfm() -> Callable[..., subprocess.CompletedProcess]:
    """``run_reelfm(args, env, drop=())``: ``reelfm <args>`` in a child with this process's
    environment plus ``env``, less the variables in ``drop``; fails the test on a non-zero exit
    with the end of its output."""

    def run(
        args: list[str], env: Mapping[str, str], drop: tuple[str, ...] = ()
    ) -> subprocess.CompletedProcess:
        child_env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", **env}
        for name in drop:
            child_env.pop(name, None)
        result = subprocess.run(
            [sys.executable, "-m", "jobs.cli", *args],
            cwd=REPO_ROOT,
            env=child_env,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result

    return run
