"""The Definitions load, hold the contract's asset keys, and the layers point one way."""

from __future__ import annotations

import ast
from pathlib import Path

from jobs.definitions import defs

ROOT = Path(__file__).resolve().parents[1]


def test_definitions_hold_the_data_assets_and_job():
    keys = {key.to_user_string() for key in defs.resolve_all_asset_keys()}
    assert {
        "bronze/titles",
        "bronze/events",
        "bronze/events_rejected",
        "silver/session_events",
        "silver/sessions",
        "gold/interaction_tokens",
        "gold/tokenizer",
        "models/foundation",
        "eval/report",
    } <= keys
    job = defs.resolve_job_def("daily_data")
    assert job.partitions_def is not None
    schedule = defs.resolve_schedule_def("nightly_data")
    assert schedule.cron_schedule == "0 2 * * *"


def test_blocking_reject_rate_check_is_declared():
    checks = {
        (key.asset_key.to_user_string(), key.name)
        for key in defs.resolve_asset_graph().asset_check_keys
    }
    assert ("bronze/events", "reject_rate_below_threshold") in checks


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_pipelines_import_no_dagster_assets_or_jobs():
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & {"dagster", "assets", "jobs"})
        for path in (ROOT / "pipelines").rglob("*.py")
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_assets_do_not_import_jobs():
    offenders = [p.name for p in (ROOT / "assets").rglob("*.py") if "jobs" in _imports(p)]
    assert offenders == []
