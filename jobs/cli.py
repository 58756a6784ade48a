"""``reelfm``: the command line for trying and operating the pipeline without a server.

``reelfm demo`` generates synthetic landing data and materializes every day through the same
Dagster job the schedule runs, in-process, on the persistent instance under ``DAGSTER_HOME`` (so
``make ui`` shows the runs afterwards). ``reelfm run`` materializes chosen days of landing data
already in place (from ``reelfm import-movielens`` for instance).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import shutil
import sys
import time
from pathlib import Path

from pipelines.settings import Settings

LANDING_FORMATS: tuple[str, ...] = ("jsonl", "parquet")
"""``--landing-format`` choices: ``pipelines.sources.synthetic.LANDING_FORMATS`` (not imported
here, so that parsing arguments does not load the generator)."""


def _days(first: dt.date, count: int) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range(count)]


INSTANCE_TEMPLATE = Path(__file__).resolve().parents[1] / "infra" / "embedded" / "dagster.yaml"


def ensure_dagster_home(settings: Settings) -> None:
    """Create the embedded Dagster instance folder (with ``infra/embedded/dagster.yaml``) if missing."""
    os.makedirs(settings.dagster_home, exist_ok=True)
    target = Path(settings.dagster_home) / "dagster.yaml"
    if not target.exists():
        shutil.copyfile(INSTANCE_TEMPLATE, target)
    os.environ["DAGSTER_HOME"] = settings.dagster_home


def materialize_days(
    days: list[dt.date], job_name: str = "daily_data", run_config: dict | None = None
) -> list[dict]:
    """Run ``job_name`` for each day in order, in-process; stop at the first failure."""
    import dagster as dg

    from jobs.definitions import defs

    settings = Settings.from_env()
    ensure_dagster_home(settings)
    job = defs.resolve_job_def(job_name)
    results = []
    with dg.DagsterInstance.get() as instance:
        for day in days:
            started = time.perf_counter()
            result = job.execute_in_process(
                instance=instance,
                partition_key=day.isoformat(),
                # Step-by-step events stay in the instance (and the UI); the terminal gets warnings only.
                run_config={
                    "loggers": {"console": {"config": {"log_level": "WARNING"}}},
                    **(run_config or {}),
                },
            )
            checks = [
                evaluation
                for evaluation in result.get_asset_check_evaluations()
                if not evaluation.passed
            ]
            results.append(
                {
                    "day": day.isoformat(),
                    "run_id": result.run_id,
                    "success": result.success and not checks,
                    "seconds": round(time.perf_counter() - started, 1),
                    "failed_checks": [c.check_name for c in checks],
                }
            )
            print(
                f"  {job_name} {day}: {'ok' if results[-1]['success'] else 'FAILED'} in {results[-1]['seconds']} s"
                + (f" (blocked by {', '.join(results[-1]['failed_checks'])})" if checks else ""),
                flush=True,
            )
            if not results[-1]["success"]:
                break
    return results


def print_summary(settings: Settings) -> None:
    """Tables written with their row counts, and where to look next."""
    from pipelines.lake import table_exists
    from pipelines.spark_session import build_spark_session
    from pipelines.tokens.gold import tokenizer_path

    spark = build_spark_session(settings)
    print("\nTables (Delta, readable by any engine):")
    for layer, table in [
        ("bronze", "titles"),
        ("bronze", "events"),
        ("bronze", "events_rejected"),
        ("silver", "session_events"),
        ("silver", "sessions"),
        ("gold", "interaction_tokens"),
        ("gold", "member_positions"),
    ]:
        path = settings.table_path(layer, table)
        rows = spark.read.format("delta").load(path).count() if table_exists(spark, path) else "-"
        print(f"  {layer}/{table:<20} {rows!s:>10} rows   {path}")
    print(f"\nTokenizer:   {tokenizer_path(settings)}")
    _print_registry(settings)
    print(
        f"Reports:     {os.path.join(settings.home, 'reports', 'eval')}/<day>/metrics.md (+ .html, plots)"
    )
    print(f"MLflow runs: {settings.mlflow_tracking_uri}  (browse: make mlflow-ui)")
    print(
        f"Dagster:     DAGSTER_HOME={settings.dagster_home}  (browse: make ui → http://127.0.0.1:3000)"
    )


def _print_registry(settings: Settings) -> None:
    """Registered model versions and their aliases (what consumers pull)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from pipelines.tracking import configure_mlflow

    configure_mlflow(settings)
    client = MlflowClient()
    try:
        versions = client.search_model_versions("name = 'reelfm-foundation'")
    except MlflowException:
        return
    for found in sorted(versions, key=lambda v: int(v.version)):
        # Search results carry no aliases; the version itself does.
        version = client.get_model_version("reelfm-foundation", str(found.version))
        aliases = ", ".join(version.aliases) or "-"
        print(f"Registered:  reelfm-foundation v{version.version} (aliases: {aliases})")


def cmd_demo(args: argparse.Namespace) -> int:
    from pipelines.sources.synthetic import PRESETS, generate

    settings = Settings.from_env()
    config = dataclasses.replace(PRESETS[args.preset], seed=args.seed, bad_rate=args.bad_rate)
    if args.days:
        config = dataclasses.replace(config, days=args.days)
    if not 1 <= args.holdout_days < config.days:
        print(f"--holdout-days must be in 1..{config.days - 1}: the model needs days to train on")
        return 2
    print(
        f"Generating {config.days} days of synthetic events ({args.preset} preset, "
        f"{args.landing_format} landing files) into {settings.landing_root}"
    )
    # Bronze reads a day's files by suffix (.jsonl as text, .parquet as typed rows), so the
    # format needs no ingestion setting; the generator removes parts of the other format.
    summary = generate(
        config, settings.landing_root, progress=True, landing_format=args.landing_format
    )
    print(
        f"  {summary.events:,} events, {summary.injected:,} injected bad records, {summary.seconds:.1f} s"
    )
    # The last holdout_days days are held out: the model trains on the days before them and is
    # evaluated on them (each member's first new title in the window; cold start over every
    # title released in it).
    train_day = config.start_date + dt.timedelta(days=config.days - args.holdout_days)
    print(f"Materializing the daily_data job for {config.days} days (Spark + Delta, in-process):")
    results = materialize_days(_days(config.start_date, config.days))
    if all(r["success"] for r in results):
        # The model partition after the last data day trains on every day generated.
        size = "tiny" if args.preset == "tiny" else "demo"
        print(f"Pretraining the foundation model ({size} preset) on the days before {train_day}:")
        train_config = {"model_preset": size, "train_preset": size}
        results += materialize_days(
            [train_day],
            job_name="foundation_training",
            run_config={"ops": {"models__foundation": {"config": train_config}}},
        )
    if all(r["success"] for r in results):
        window = (
            f"{train_day}"
            if args.holdout_days == 1
            else f"{args.holdout_days} days from {train_day}"
        )
        print(f"Evaluating it on {window} against baselines (report, champion/challenger gate):")
        eval_config = {"target_days": args.holdout_days}
        results += materialize_days(
            [train_day],
            job_name="evaluation",
            run_config={"ops": {"eval__report": {"config": eval_config}}},
        )
    print_summary(settings)
    return 0 if all(r["success"] for r in results) else 1


def cmd_run(args: argparse.Namespace) -> int:
    first = dt.date.fromisoformat(args.start)
    results = materialize_days(_days(first, args.days))
    print_summary(Settings.from_env())
    return 0 if all(r["success"] for r in results) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reelfm",
        description="Run reelfm's pipeline on the embedded default (local Spark + Delta, MLflow on SQLite, "
        "Dagster instance under $REELFM_HOME/dagster). Locations come from REELFM_HOME and friends "
        "(see README: Configuration).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="generate synthetic events and materialize every day")
    demo.add_argument(
        "--preset",
        default="tiny",
        choices=["tiny", "demo", "benchmark"],
        help="data size (default: tiny)",
    )
    demo.add_argument("--days", type=int, default=None, help="override the preset's number of days")
    demo.add_argument("--seed", type=int, default=7, help="generator seed (same seed, same data)")
    demo.add_argument(
        "--holdout-days",
        type=int,
        default=1,
        help="evaluate on the last N days (trained on the days before): more new titles for "
        "the cold-start bar, fewer days to train on",
    )
    demo.add_argument(
        "--bad-rate", type=float, default=0.002, help="fraction of injected bad records"
    )
    demo.add_argument(
        "--landing-format",
        default="jsonl",
        choices=LANDING_FORMATS,
        help="landing event files: JSON lines or typed Parquet rows, the same events either way "
        "(Parquet gets only the bad records a typed row can hold); default: jsonl",
    )
    demo.set_defaults(func=cmd_demo)
    run = sub.add_parser("run", help="materialize days of landing data already in place")
    run.add_argument("--start", required=True, help="first day, YYYY-MM-DD")
    run.add_argument("--days", type=int, default=1, help="number of consecutive days")
    run.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
