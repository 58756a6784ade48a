"""The public MovieLens leave-one-out benchmark: most-popular, ALS, the foundation model, SASRec.

Protocol (SASRec / BERT4Rec / HSTU): ratings as implicit interactions, each user's history in
time order, last item = test target, second-to-last = validation target, users with fewer than 3
ratings train only, histories capped at the 200 most recent items, every title ranked with the
user's seen titles excluded. Each model picks its hyperparameters on the validation targets with
the model fitted on training interactions, then refits on training + validation interactions
(``merge_validation_into_train``) and is scored once on the test targets.

A model enters the benchmark as a name and a function ``split -> fitted Recommender`` that does
its own selection and refit. The foundation model and its SASRec ablation choose their training
length by early stopping on the validation targets and are not refitted (as in SASRec: the test
history ends with the validation item, which the model reads as input). The full model reads
each rating as an action token (rated_high >= 4, rated_low <= 2, else watched) and each title's
genres and release year; the SASRec ablation reads titles only.

Run it with ``python -m pipelines.evaluation.movielens DATASET_DIR [--out REPORT_DIR]
[--models most_popular,als,foundation,sasrec] [--train-minutes 12] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
from pyspark.sql import SparkSession

from pipelines.evaluation.baselines import (
    ALSGrid,
    ALSRecommender,
    MostPopular,
    MostPopularConfig,
    select_als,
)
from pipelines.evaluation.foundation import (
    FIT_PRESETS,
    FoundationFitConfig,
    FoundationRecommender,
    TokenFeatures,
    rating_actions,
    sasrec,
)
from pipelines.evaluation.metrics import RankedTargets, Recommender, rank_targets, summarise
from pipelines.evaluation.splits import (
    LeaveOneOutConfig,
    LeaveOneOutSplit,
    index_interactions,
    leave_one_out_split,
    merge_validation_into_train,
)

FitForTest = Callable[[LeaveOneOutSplit], Recommender]
"""Chooses hyperparameters on ``split.validation``, refits, returns a model to score ``split.test``."""


def load_leave_one_out(
    dataset_dir: Path, config: LeaveOneOutConfig = LeaveOneOutConfig()
) -> LeaveOneOutSplit:
    """Read a GroupLens MovieLens folder and split it leave-one-out."""
    from pipelines.sources.movielens import read_ratings

    return leave_one_out_split(index_interactions(read_ratings(Path(dataset_dir))), config)


def foundation_models(
    dataset_dir: Path, fit: FoundationFitConfig = FIT_PRESETS["cpu"]
) -> dict[str, FitForTest]:
    """The foundation model (ratings as actions, title metadata) and its SASRec ablation."""
    from pipelines.sources.movielens import read_ratings, read_titles

    ratings = read_ratings(Path(dataset_dir))
    interactions = index_interactions(ratings)
    features = TokenFeatures.from_actions(
        ratings, interactions, rating_actions(ratings["rating"].to_numpy())
    )
    titles = read_titles(Path(dataset_dir))

    def fit_foundation(split: LeaveOneOutSplit) -> Recommender:
        if split.train.n_items != interactions.n_items:
            raise ValueError("the split was not cut from this dataset's ratings")
        model = FoundationRecommender(fit, titles=titles, features=features)
        model.fit(split)
        return model

    def fit_sasrec(split: LeaveOneOutSplit) -> Recommender:
        model = FoundationRecommender(sasrec(fit))
        model.fit(split)
        return model

    return {fit.name: fit_foundation, "sasrec": fit_sasrec}


def fit_most_popular(
    split: LeaveOneOutSplit, config: MostPopularConfig = MostPopularConfig()
) -> MostPopular:
    """Most-popular counted over training + validation interactions (nothing to tune)."""
    model = MostPopular(config)
    model.fit(merge_validation_into_train(split))
    return model


def fit_als(
    spark: SparkSession, split: LeaveOneOutSplit, grid: ALSGrid = ALSGrid()
) -> ALSRecommender:
    """ALS with the grid's best validation NDCG@10 config, refitted on training + validation."""
    selection = select_als(spark, split, grid)
    model = ALSRecommender(spark, selection.config)
    model.fit(merge_validation_into_train(split))
    return model


def baseline_models(
    spark: SparkSession,
    grid: ALSGrid = ALSGrid(),
    popularity: MostPopularConfig = MostPopularConfig(),
) -> dict[str, FitForTest]:
    """The two baselines, keyed by the name they get in the results table."""
    return {
        MostPopular.name: lambda split: fit_most_popular(split, popularity),
        ALSRecommender.name: lambda split: fit_als(spark, split, grid),
    }


@dataclass(frozen=True)
class BenchmarkResult:
    """Test metrics per model and the per-user ranks behind them (for the report's plots)."""

    table: pd.DataFrame  # index: model name; columns: metrics, fit_seconds, eval_seconds
    ranked: dict[str, RankedTargets]  # model name -> ranks of its test targets
    split: LeaveOneOutSplit  # the split every model was scored on


def run_leave_one_out(
    split: LeaveOneOutSplit, models: Mapping[str, FitForTest], batch_size: int = 1024
) -> BenchmarkResult:
    """Fit each model with its own function and score it on ``split.test``."""
    if not models:
        raise ValueError("no models to benchmark")
    rows, ranked = {}, {}
    for name, fit in models.items():
        started = time.perf_counter()
        model = fit(split)
        fitted = time.perf_counter()
        ranked[name] = rank_targets(model, split.test, batch_size)
        rows[name] = {
            **summarise(ranked[name]),
            "fit_seconds": fitted - started,
            "eval_seconds": time.perf_counter() - fitted,
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "model"
    return BenchmarkResult(table=table, ranked=ranked, split=split)


def leave_one_out_benchmark(
    dataset_dir: Path,
    models: Mapping[str, FitForTest],
    config: LeaveOneOutConfig = LeaveOneOutConfig(),
    batch_size: int = 1024,
) -> pd.DataFrame:
    """Test metrics (rows: models, columns: metrics) on one MovieLens folder."""
    return run_leave_one_out(load_leave_one_out(dataset_dir, config), models, batch_size).table


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.evaluation.movielens",
        description="Leave-one-out full-ranking benchmark of the baselines on MovieLens.",
    )
    parser.add_argument("dataset_dir", type=Path, help="unpacked GroupLens folder (ml-100k, …)")
    parser.add_argument("--out", type=Path, default=None, help="write the report here")
    parser.add_argument(
        "--models",
        nargs="+",
        default=[MostPopular.name, ALSRecommender.name],
        help="models to run, space- or comma-separated: most_popular, als, foundation, sasrec "
        "(default: most_popular als)",
    )
    parser.add_argument(
        "--fit-preset", default="cpu", choices=sorted(FIT_PRESETS), help="foundation/sasrec size"
    )
    parser.add_argument(
        "--train-minutes",
        type=float,
        default=None,
        help="training budget of foundation and sasrec, each, in minutes of CPU time of this "
        "process (time.process_time: all its threads summed, so with --threads 1 it is minutes "
        "of one-thread CPU; other load on the machine costs wall time, not steps; default: the "
        "preset's epochs with early stopping)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args(argv)
    args.models = [name for value in args.models for name in value.split(",") if name]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; prints the table and returns the exit status."""
    import torch

    from pipelines.evaluation.report import write_report
    from pipelines.settings import Settings
    from pipelines.spark_session import build_spark_session

    args = _parse_args(argv)
    known = {MostPopular.name, ALSRecommender.name, "foundation", "sasrec"}
    unknown = set(args.models) - known
    if unknown:
        raise SystemExit(f"unknown models {sorted(unknown)}; choose from {sorted(known)}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    available: dict[str, FitForTest] = {MostPopular.name: lambda split: fit_most_popular(split)}
    if ALSRecommender.name in args.models:  # a Spark JVM only when ALS runs
        spark = build_spark_session(Settings.from_env(), app_name="reelfm-movielens-benchmark")
        available.update(baseline_models(spark))
    if {"foundation", "sasrec"} & set(args.models):
        fit = replace(FIT_PRESETS[args.fit_preset], train_minutes=args.train_minutes)
        available.update(foundation_models(args.dataset_dir, fit))
    result = run_leave_one_out(
        load_leave_one_out(args.dataset_dir), {name: available[name] for name in args.models}
    )
    with pd.option_context(
        "display.float_format", "{:.4f}".format, "display.width", 200, "display.max_columns", None
    ):
        print(f"{args.dataset_dir.name}: {len(result.split.test)} test users")
        print(result.table)
    if args.out is not None:
        paths = write_report(args.out, result.table, ranked=result.ranked)
        print(f"report: {paths.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
