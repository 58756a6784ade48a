"""The public MovieLens leave-one-out benchmark: most-popular, ALS, the foundation model, SASRec.

Protocol (SASRec / BERT4Rec / HSTU): ratings as implicit interactions, each user's history in
time order, last item = test target, second-to-last = validation target, users with fewer than 3
ratings train only, histories capped at the 200 most recent items, every title ranked with the
user's seen titles excluded. Each model picks its hyperparameters on the validation targets with
the model fitted on training interactions, then refits on training + validation interactions
(``merge_validation_into_train``) and is scored once on the test targets.

A model enters the benchmark as a name and a function ``split -> fitted Recommender`` that does
its own selection and refit. The foundation model and its SASRec ablation choose their training
length by early stopping on the validation targets' NDCG@10 (full ranking, seen titles
excluded) and keep the best-validated weights; they are not refitted (as in SASRec: the test
history ends with the validation item, which the model reads as input). With ``--select-from``
each of them also chooses its fit preset by a rule on the validation targets: every candidate
trains ``--screen-minutes`` of CPU, the best validation NDCG@10 is refitted with the full
budget (the same code for both models and every data set). The full model reads each rating as
an action token (rated_high >= 4, rated_low <= 2, else watched); the SASRec ablation reads
titles only.

Run it with ``python -m pipelines.evaluation.movielens DATASET_DIR [--out REPORT_DIR]
[--models most_popular,als,foundation,sasrec] [--train-minutes 12] [--threads 1] [--seed 0]
[--select-from cpu --screen-minutes 3 [--screen-only]]``. DATASET_DIR is any GroupLens layout
that ``pipelines.sources.movielens`` reads (ml-100k, ml-1m, ml-latest(-small), ml-20m/25m/32m).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
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
    SCREEN_GRIDS,
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
    return leave_one_out_split(index_interactions(_ratings(Path(dataset_dir))), config)


def screen(
    split: LeaveOneOutSplit,
    build: Callable[[FoundationFitConfig], FoundationRecommender],
    candidates: Mapping[str, FoundationFitConfig],
    fitted: dict[str, FoundationRecommender] | None = None,
) -> pd.DataFrame:
    """Fit every candidate on ``split.train`` and score it on ``split.validation`` only.

    Rows: candidate labels; columns: the validation metrics (``summarise``), optimizer steps,
    the best-validated step and the CPU seconds of the fit. The test targets are never read.
    ``fitted``, when given, receives each fitted candidate under its label.
    """
    rows = {}
    for label, config in candidates.items():
        model = build(config)
        model.fit(split)
        if fitted is not None:
            fitted[label] = model
        result = model.train_result
        rows[label] = {
            **summarise(rank_targets(model, split.validation)),
            "steps": result.steps if result else 0,
            "best_step": result.best_step if result else None,
            "fit_cpu_seconds": model.fit_cpu_seconds,
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "candidate"
    return table


def best_on_validation(table: pd.DataFrame, metric: str = "ndcg_at_10") -> str:
    """The candidate with the highest validation ``metric`` (the first listed on a tie)."""
    return str(table[metric].idxmax())


@dataclass(frozen=True)
class Selection:
    """How the transformers are chosen: fixed presets, or a screen of candidates."""

    foundation: FoundationFitConfig = FIT_PRESETS["cpu"]
    sasrec: FoundationFitConfig | None = None  # None: sasrec(foundation)
    # Screen these presets (each model's own variant) with screen_minutes of CPU each on the
    # validation items, then refit the best validation NDCG@10 with the foundation/sasrec
    # budget, seed and name (a screen at that budget is kept, not refitted). Empty: no
    # screen, the presets above are used as they are.
    candidates: tuple[str, ...] = ()
    screen_minutes: float = 3.0
    on_screen: Callable[[str, pd.DataFrame], None] | None = None  # sees each model's screen


def model_builders(
    dataset_dir: Path,
) -> dict[str, Callable[[FoundationFitConfig], FoundationRecommender]]:
    """Unfitted "foundation" (ratings as actions) and "sasrec" (titles only) for a fit config."""
    from pipelines.sources.movielens import read_titles

    ratings = _ratings(Path(dataset_dir))
    interactions = index_interactions(ratings)
    features = TokenFeatures.from_actions(
        ratings, interactions, rating_actions(ratings["rating"].to_numpy())
    )
    titles = read_titles(Path(dataset_dir))

    def build_foundation(config: FoundationFitConfig) -> FoundationRecommender:
        return FoundationRecommender(config, titles=titles, features=features)

    def build_sasrec(config: FoundationFitConfig) -> FoundationRecommender:
        return FoundationRecommender(sasrec(config))

    return {"foundation": build_foundation, "sasrec": build_sasrec}


def foundation_models(
    dataset_dir: Path, fit: FoundationFitConfig | Selection = FIT_PRESETS["cpu"]
) -> dict[str, FitForTest]:
    """The foundation model (ratings as actions) and its SASRec ablation, each fitted with
    ``fit`` or, when ``fit`` is a ``Selection`` with candidates, with the candidate its own
    screen on the validation items chose (the same rule for both models and every data set)."""
    selection = fit if isinstance(fit, Selection) else Selection(foundation=fit)
    builders = model_builders(dataset_dir)
    n_items = read_n_items(dataset_dir)

    def fitter(name: str, final: FoundationFitConfig) -> FitForTest:
        build = builders[name]

        def fit_model(split: LeaveOneOutSplit) -> Recommender:
            if split.train.n_items != n_items:
                raise ValueError("the split was not cut from this dataset's ratings")
            config = final
            if selection.candidates:
                fitted: dict[str, FoundationRecommender] = {}
                table = screen(split, build, screen_candidates(selection, final), fitted)
                if selection.on_screen is not None:
                    selection.on_screen(name, table)
                best = best_on_validation(table)
                if selection.screen_minutes == final.train_minutes:
                    # The screen ran the final budget and seed: its fit is the refit.
                    return fitted[best]
                config = replace(
                    FIT_PRESETS[best],
                    name=final.name,
                    seed=final.seed,
                    train_minutes=final.train_minutes,
                )
            model = build(config)
            model.fit(split)
            return model

        return fit_model

    foundation = selection.foundation
    return {
        foundation.name: fitter("foundation", foundation),
        "sasrec": fitter("sasrec", selection.sasrec or foundation),
    }


def read_n_items(dataset_dir: Path) -> int:
    """Titles rated in the data set: the size of every split's item index."""
    return int(_ratings(Path(dataset_dir))["title_id"].nunique())


@lru_cache(maxsize=1)
def _ratings(dataset_dir: Path) -> pd.DataFrame:
    """The data set's ratings, read once for the builders and the item count (the last folder
    read is kept: a 25M-rating file takes most of a minute to parse)."""
    from pipelines.sources.movielens import read_ratings

    return read_ratings(dataset_dir)


def screen_candidates(
    selection: Selection, final: FoundationFitConfig
) -> dict[str, FoundationFitConfig]:
    """The selection's candidate presets with the screen's budget and the final run's seed."""
    return {
        label: replace(
            FIT_PRESETS[label],
            name=final.name,
            seed=final.seed,
            train_minutes=selection.screen_minutes,
        )
        for label in selection.candidates
    }


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
    """Fit each model with its own function and score it on ``split.test``.

    A model trained on ``split.train`` alone (it has a ``train_result``: the foundation model
    and its ablation) also gets its validation NDCG@10 / HR@10 (``val_*``: what its choices were
    made on), its optimizer steps and its best-validated step. The baselines are refitted on the
    validation items, so they have no validation score here.
    """
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
        result = getattr(model, "train_result", None)
        if result is not None:
            validation = summarise(rank_targets(model, split.validation, batch_size))
            rows[name].update(
                val_ndcg_at_10=validation["ndcg_at_10"],
                val_hr_at_10=validation["hr_at_10"],
                steps=result.steps,
                best_step=result.best_step,
            )
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
    parser.add_argument(
        "--sasrec-preset",
        default=None,
        choices=sorted(FIT_PRESETS),
        help="the SASRec ablation's fit preset (default: --fit-preset's)",
    )
    parser.add_argument(
        "--select-from",
        default=None,
        help="screen these fit presets (a grid name: "
        + ", ".join(sorted(SCREEN_GRIDS))
        + "; or presets, comma-separated) on the validation items with --screen-minutes each, "
        "per model, and refit each model's best validation NDCG@10 with --train-minutes "
        "(overrides --fit-preset / --sasrec-preset)",
    )
    parser.add_argument(
        "--screen-minutes", type=float, default=3.0, help="CPU minutes per screened candidate"
    )
    parser.add_argument(
        "--screen-only",
        action="store_true",
        help="with --select-from: print each model's validation screen and stop (no test)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of foundation and sasrec")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args(argv)
    args.models = [name for value in args.models for name in value.split(",") if name]
    if args.select_from is not None:
        names = SCREEN_GRIDS.get(args.select_from) or tuple(
            name for name in args.select_from.split(",") if name
        )
        unknown = sorted(set(names) - set(FIT_PRESETS))
        if unknown:
            parser.error(f"unknown fit presets {unknown}; choose from {sorted(FIT_PRESETS)}")
        args.select_from = tuple(names)
    elif args.screen_only:
        parser.error("--screen-only needs --select-from")
    return args


def _print_table(title: str, table: pd.DataFrame) -> None:
    with pd.option_context(
        "display.float_format", "{:.4f}".format, "display.width", 200, "display.max_columns", None
    ):
        print(title)
        print(table, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; prints the table and returns the exit status."""
    import torch

    from pipelines.evaluation.report import paired_differences, write_report
    from pipelines.settings import Settings
    from pipelines.spark_session import build_spark_session

    args = _parse_args(argv)
    known = {MostPopular.name, ALSRecommender.name, "foundation", "sasrec"}
    unknown = set(args.models) - known
    if unknown:
        raise SystemExit(f"unknown models {sorted(unknown)}; choose from {sorted(known)}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        split = load_leave_one_out(args.dataset_dir)
    except (FileNotFoundError, ValueError) as error:  # not a MovieLens folder, or no ratings
        raise SystemExit(f"cannot read {args.dataset_dir}: {error}") from error
    available: dict[str, FitForTest] = {MostPopular.name: lambda split: fit_most_popular(split)}
    if ALSRecommender.name in args.models and not args.screen_only:  # a JVM only for ALS
        spark = build_spark_session(Settings.from_env(), app_name="reelfm-movielens-benchmark")
        available.update(baseline_models(spark))
    if {"foundation", "sasrec"} & set(args.models):

        def budgeted(preset: str) -> FoundationFitConfig:
            return replace(FIT_PRESETS[preset], train_minutes=args.train_minutes, seed=args.seed)

        def show(name: str, table: pd.DataFrame) -> None:
            _print_table(
                f"{args.dataset_dir.name} {name}: validation screen (seed {args.seed}), "
                f"best NDCG@10: {best_on_validation(table)}",
                table,
            )

        selection = Selection(
            foundation=budgeted(args.fit_preset),
            sasrec=budgeted(args.sasrec_preset or args.fit_preset),
            candidates=args.select_from or (),
            screen_minutes=args.screen_minutes,
            on_screen=show,
        )
        if args.screen_only:
            builders = model_builders(args.dataset_dir)
            for name in args.models:
                if name in builders:
                    final = selection.foundation if name == "foundation" else selection.sasrec
                    candidates = screen_candidates(selection, final)
                    show(name, screen(split, builders[name], candidates))
            return 0
        available.update(foundation_models(args.dataset_dir, selection))
    result = run_leave_one_out(split, {name: available[name] for name in args.models})
    _print_table(f"{args.dataset_dir.name}: {len(result.split.test)} test users", result.table)
    compare = "foundation" if "foundation" in result.ranked else next(iter(result.ranked))
    if len(result.ranked) > 1:
        _print_table(
            "NDCG@10 differences, paired per user", paired_differences(result.ranked, compare)
        )
    if args.out is not None:
        paths = write_report(args.out, result.table, ranked=result.ranked, compare=compare)
        print(f"report: {paths.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
