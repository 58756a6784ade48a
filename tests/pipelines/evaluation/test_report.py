"""The report folder: tables, bucketed metrics worked by hand, plots, and the MLflow upload."""

from __future__ import annotations

import math
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from pipelines.evaluation.metrics import RankedTargets
from pipelines.evaluation.report import (
    bars_markdown,
    log_report,
    metric_by_history_length,
    metrics_table,
    paired_differences,
    quality_bars,
    ratio_text,
    recall_by_title_age,
    write_report,
)

DAY = 86_400


def _ranked(ranks: list[float], history_length: list[int], target_ts: list[int]) -> RankedTargets:
    n = len(ranks)
    return RankedTargets(
        ranks=np.asarray(ranks, dtype=np.float64)[:, None],
        targets=np.arange(n, dtype=np.int64)[:, None],  # user i's target is item i
        target_ts=np.asarray(target_ts, dtype=np.int64)[:, None],
        history_length=np.asarray(history_length, dtype=np.int64),
        top_items=np.tile(np.arange(10), (n, 1)),
        n_items=20,
    )


RANKED = {
    "model": _ranked([1, 3, 100, 7], [2, 3, 30, 60], [10 * DAY, 40 * DAY, 2 * DAY, 400 * DAY])
}


def test_metrics_by_history_length_bucket():
    table = metric_by_history_length(RANKED)
    assert table.loc["0-5 items", ("ndcg_at_10", "model")] == pytest.approx((1 + 0.5) / 2)
    assert table.loc["20-50 items", ("hr_at_10", "model")] == 0.0
    assert table.loc["50-100 items", ("ndcg_at_10", "model")] == pytest.approx(1 / math.log2(8))
    assert math.isnan(table.loc["5-10 items", ("ndcg_at_10", "model")])
    assert table["n_cases"].tolist() == [2, 0, 0, 1, 1, 0, 0]


def test_recall_by_title_age_bucket():
    release = np.zeros(20)  # every title released at t = 0, so age = target time
    release[3] = np.nan  # unknown release: left out
    table = recall_by_title_age(RANKED, release, k=50)
    assert table.loc["7-30 days", "model"] == 1.0  # rank 1 at 10 days
    assert table.loc["30-90 days", "model"] == 1.0  # rank 3 at 40 days
    assert table.loc["0-7 days", "model"] == 0.0  # rank 100 at 2 days
    assert table["n_cases"].sum() == 3


def test_write_report_and_log_it_to_mlflow(tmp_path: Path):
    results = {
        "most_popular": {"ndcg_at_10": 0.04, "hr_at_10": 0.08, "extra": 1.0},
        "als": {"ndcg_at_10": 0.07, "hr_at_10": 0.14, "extra": 2.0},
    }
    paths = write_report(
        tmp_path / "report",
        results,
        ranked={"most_popular": RANKED["model"], "als": RANKED["model"]},
        item_release_ts=np.zeros(20),
        loss_histories={"foundation": [3.0, 2.5, 2.1]},
    )
    assert metrics_table(results).columns.tolist() == ["hr_at_10", "ndcg_at_10", "extra"]
    markdown = paths.markdown.read_text()
    assert "| als | 0.1400 | 0.0700 | 2.0000 |" in markdown
    assert "ndcg_by_history_length.png" in markdown
    assert "<table" in paths.html.read_text()
    assert set(paths.plots) == {"ndcg_by_history_length", "recall_by_title_age", "training_curves"}
    # The first ranked model against the others, paired per case (same ranks here: 0 ± 0).
    assert "## NDCG@10 of most_popular against each model, paired per case" in markdown
    assert "| als | 0.0000 | 0.0000 | 0.0000 | 0.0000 | 4 |" in markdown
    for png in paths.plots.values():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        art = (tmp_path / "art").as_uri()
        experiment = mlflow.create_experiment("report", artifact_location=art)
        with mlflow.start_run(experiment_id=experiment) as run:
            log_report(paths.folder)
        client = mlflow.MlflowClient()
        logged = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    finally:
        mlflow.set_tracking_uri(previous_uri)
    assert "evaluation/metrics.md" in logged and "evaluation/training_curves.png" in logged


def test_log_report_needs_a_run(tmp_path: Path):
    (tmp_path / "report").mkdir()
    with pytest.raises(RuntimeError, match="no active MLflow run"):
        log_report(tmp_path / "report")


def ndcg_and_cold_start(**models: tuple[float, float]) -> pd.DataFrame:
    """A metrics table of NDCG@10 and cold-start recall@50 per model."""
    return metrics_table(
        {name: {"ndcg_at_10": n, "cold_start_recall_at_50": c} for name, (n, c) in models.items()}
    )


def test_quality_bars_divide_by_the_reference_and_say_pass_or_fail(tmp_path: Path):
    table = ndcg_and_cold_start(
        foundation=(0.30, 0.40),
        oracle=(0.40, 0.9),
        most_popular=(0.10, 0.0),
        most_popular_new=(0.09, 0.25),
    )
    bars = quality_bars(table, "foundation")
    assert bars.loc["ndcg_at_10_vs_oracle", "ratio"] == pytest.approx(0.75)
    assert not bars.loc["ndcg_at_10_vs_oracle", "passed"]  # 0.75 < 0.80
    assert bars.loc["ndcg_at_10_vs_most_popular", "ratio"] == pytest.approx(3.0)
    assert bars.loc["ndcg_at_10_vs_most_popular", "passed"]
    cold = bars.loc["cold_start_recall_at_50_vs_most_popular_new"]
    assert cold["ratio"] == pytest.approx(1.6) and not cold["passed"]
    paths = write_report(tmp_path, table, bars=bars, notes=["oracle: the generator's"])
    markdown = paths.markdown.read_text()
    assert "## Quality bars" in markdown and "## Notes" in markdown
    assert "| ndcg_at_10_vs_oracle | 0.3000 | oracle | 0.4000 | 0.750 | >= 0.8 | FAIL |" in markdown
    assert (
        "| ndcg_at_10_vs_most_popular | 0.3000 | most_popular | 0.1000 | 3.000 | >= 2 | pass |"
        in markdown
    )
    assert "Quality bars" in paths.html.read_text()


def test_a_ratio_just_under_its_bar_never_reads_as_reaching_it():
    # The demo's test day once gave 0.2558 / 0.3198 = 0.79987: "0.800 ... FAIL" reads wrong.
    table = ndcg_and_cold_start(
        foundation=(0.2558, 0.4),
        oracle=(0.3198, 0.9),
        most_popular=(0.1, 0.0),
        most_popular_new=(0.01, 0.2),
    )
    markdown = bars_markdown(quality_bars(table, "foundation"))
    assert "| 0.7999 | >= 0.8 | FAIL |" in markdown
    assert "| 2.558 | >= 2 | pass |" in markdown  # clear of its bar: three decimals
    assert ratio_text(0.79987, 0.8, 2) == "0.7999" and ratio_text(0.75, 0.8, 2) == "0.75"
    assert ratio_text(2.0004, 2.0, 3) == "2.000"  # rounds onto the bar from above: still pass


def test_the_bar_against_the_oracle_also_reports_the_knowable_oracles():
    table = metrics_table(
        {
            "foundation": {"ndcg_at_10": 0.30},
            "oracle": {"ndcg_at_10": 0.40},
            "oracle_at_cutoff": {"ndcg_at_10": 0.36},
            "oracle_from_history": {"ndcg_at_10": 0.32},
            "most_popular": {"ndcg_at_10": 0.10},
        }
    )
    bar = quality_bars(table, "foundation").loc["ndcg_at_10_vs_oracle"]
    # The bar itself is still judged against the oracle; the note adds the knowable ratios.
    assert bar["ratio"] == pytest.approx(0.75) and not bar["passed"]
    first, second = bar["note"].split("; ")
    assert first.startswith("0.833 x oracle_at_cutoff (0.3600)")
    assert second.startswith("0.938 x oracle_from_history (0.3200)")


def test_quality_bars_without_the_oracle_are_undefined_not_zero():
    table = metrics_table({"foundation": {"ndcg_at_10": 0.3}, "most_popular": {"ndcg_at_10": 0.0}})
    bars = quality_bars(table, "foundation")
    oracle = bars.loc["ndcg_at_10_vs_oracle"]
    assert math.isnan(oracle["ratio"]) and oracle["passed"] is None
    assert oracle["note"] == "oracle was not evaluated"
    assert bars.loc["ndcg_at_10_vs_most_popular", "ratio"] == math.inf  # 0.3 over 0
    cold = bars.loc["cold_start_recall_at_50_vs_most_popular_new"]
    assert math.isnan(cold["ratio"]) and cold["passed"] is None
    assert "| n/a |" in bars_markdown(bars)
    with pytest.raises(ValueError, match="not in the metrics table"):
        quality_bars(table, "sasrec")


def test_a_bar_the_oracle_itself_misses_says_it_is_out_of_reach():
    # 126 new titles: putting them first in random order has recall@50 ~ 50/126 = 0.4; the
    # oracle, ranking them among the whole catalogue, reaches 0.75 = 1.9 x that, under 2 x.
    table = ndcg_and_cold_start(
        foundation=(0.30, 0.45),
        oracle=(0.40, 0.75),
        most_popular=(0.10, 0.0),
        most_popular_new=(0.01, 0.40),
    )
    bars = quality_bars(table, "foundation")
    cold = bars.loc["cold_start_recall_at_50_vs_most_popular_new"]
    assert cold["ratio"] == pytest.approx(1.125) and not cold["passed"]
    assert (
        cold["note"] == "out of reach here: even the oracle (the best possible ranking) "
        "reaches 1.88 x most_popular_new"
    )
    # A bar the oracle clears has no such note, and the bar against the oracle never does.
    assert bars.loc["ndcg_at_10_vs_most_popular", "note"] == ""
    assert bars.loc["ndcg_at_10_vs_oracle", "note"] == ""


def test_paired_differences_put_the_model_against_each_other():
    # One rank worse than RANKED's model on every case inside the top 10.
    behind = _ranked([2, 4, 100, 8], [2, 3, 30, 60], [0, 0, 0, 0])
    table = paired_differences({"mine": RANKED["model"], "behind": behind}, "mine")
    gains = [
        1 - 1 / math.log2(3),
        1 / math.log2(4) - 1 / math.log2(5),
        0.0,
        1 / 3 - 1 / math.log2(9),
    ]
    assert table.index.tolist() == ["behind"]
    assert table.loc["behind", "ndcg_at_10_difference"] == pytest.approx(np.mean(gains))
    assert table.loc["behind", "n_cases"] == 4
    with pytest.raises(ValueError, match="no ranking of 'nobody'"):
        paired_differences({"mine": RANKED["model"]}, "nobody")
