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


def test_demo_landing_format_choices_are_the_generators() -> None:
    from pipelines.sources.synthetic import LANDING_FORMATS

    assert build_parser().parse_args(["demo"]).landing_format == "jsonl"
    for landing_format in LANDING_FORMATS:
        args = build_parser().parse_args(["demo", "--landing-format", landing_format])
        assert args.landing_format == landing_format
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--landing-format", "csv"])


@pytest.mark.parametrize(
    ("argv", "suffix"), [([], ".jsonl"), (["--landing-format", "parquet"], ".parquet")]
)
def test_demo_writes_landing_files_in_the_chosen_format(
    argv: list[str],
    suffix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """The real generator runs; materializing is stubbed (bronze reads either format by suffix)."""
    import jobs.cli

    monkeypatch.setenv("REELFM_HOME", str(tmp_path))
    materialized: list[list] = []

    def fake_materialize(days, job_name="daily_data", run_config=None):
        materialized.append(days)
        return [{"success": False}]  # stop before training

    monkeypatch.setattr(jobs.cli, "materialize_days", fake_materialize)
    monkeypatch.setattr(jobs.cli, "print_summary", lambda settings: None)
    assert main(["demo", "--preset", "tiny", "--days", "2", *argv]) == 1
    assert len(materialized) == 1 and len(materialized[0]) == 2
    events = Path(Settings.from_env().landing_root) / "events"
    parts = sorted(p.suffix for p in events.glob("date=*/part-*"))
    assert parts and set(parts) == {suffix}
    assert f"{suffix[1:]} landing files" in capsys.readouterr().out
