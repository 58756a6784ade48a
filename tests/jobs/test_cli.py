"""The ``reelfm`` command line: argument handling that needs no Spark."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.cli import build_parser, main
from pipelines.settings import Settings


def test_demo_holds_out_one_day_unless_told() -> None:
    assert build_parser().parse_args(["demo"]).holdout_days == 1
    assert build_parser().parse_args(["demo", "--holdout-days", "3"]).holdout_days == 3


@pytest.mark.parametrize("holdout", ["0", "3"])
def test_demo_refuses_a_holdout_that_leaves_no_day_to_train_on(
    holdout: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("REELFM_HOME", str(tmp_path))
    # The tiny world has 3 days: 1 or 2 can be held out, 0 or 3 cannot.
    assert main(["demo", "--preset", "tiny", "--holdout-days", holdout]) == 2
    assert "--holdout-days must be in 1..2" in capsys.readouterr().out
    assert not Path(Settings.from_env().landing_root).exists()  # refused before generating
