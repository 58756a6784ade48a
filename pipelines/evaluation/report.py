"""The evaluation report: a models × metrics table as Markdown and HTML, plots as PNG.

``eval/report`` and the MovieLens benchmark write the same folder: ``metrics.md``,
``metrics.html``, ``metrics.csv`` and one PNG per plot (NDCG@10 and HR@10 by history length,
cold-start recall by title age, training loss curves). ``log_report`` copies the folder into an
MLflow run's artifacts, so a registered model version links to the evidence its gate used.
Matplotlib runs on the Agg backend: reports are written by servers with no display.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.evaluation.metrics import COLD_START_K, METRIC_NAMES, RankedTargets, hit_at, ndcg_at

HISTORY_BUCKETS: tuple[float, ...] = (0, 5, 10, 20, 50, 100, 200, np.inf)
"""Edges of the history-length buckets, ``[lo, hi)`` in items seen before the target."""
AGE_BUCKETS_DAYS: tuple[float, ...] = (0, 7, 30, 90, 365, 3 * 365, np.inf)
"""Edges of the title-age buckets, ``[lo, hi)`` in days from release to the interaction."""
_SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class ReportPaths:
    """Where ``write_report`` put each file."""

    folder: Path  # the report folder (what log_report uploads)
    markdown: Path  # metrics.md: the table and links to the plots
    html: Path  # metrics.html: the same, for a browser or Dagster metadata
    table_csv: Path  # metrics.csv: the table, machine-readable
    plots: dict[str, Path] = field(default_factory=dict)  # plot name -> PNG path


def metrics_table(results: Mapping[str, Mapping[str, float]] | pd.DataFrame) -> pd.DataFrame:
    """Rows: models; columns: the standard metrics first (in ``METRIC_NAMES`` order), then the rest."""
    table = results.copy() if isinstance(results, pd.DataFrame) else pd.DataFrame(results).T
    if table.empty:
        raise ValueError("no results to report")
    known = [name for name in METRIC_NAMES if name in table.columns]
    table = table[known + [c for c in table.columns if c not in known]]
    table.index.name = "model"
    return table


def _bucket_labels(edges: Sequence[float], unit: str) -> list[str]:
    labels = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        labels.append(f"{lo:g}+ {unit}" if np.isinf(hi) else f"{lo:g}-{hi:g} {unit}")
    return labels


def _bucket_counts(keys: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Cases per ``[lo, hi)`` bucket of ``keys``."""
    index = np.digitize(keys, np.asarray(edges)[1:-1])  # bucket number per case
    return np.bincount(index, minlength=len(edges) - 1)


def _bucketed(values: np.ndarray, keys: np.ndarray, edges: Sequence[float]) -> pd.Series:
    """Mean of ``values`` per ``[lo, hi)`` bucket of ``keys``; buckets with no case are NaN."""
    index = np.digitize(keys, np.asarray(edges)[1:-1])  # bucket number per case
    sums = np.bincount(index, weights=values, minlength=len(edges) - 1)
    counts = _bucket_counts(keys, edges)
    return pd.Series(np.where(counts > 0, sums / np.maximum(counts, 1), np.nan))


def metric_by_history_length(
    ranked: Mapping[str, RankedTargets], k: int = 10, edges: Sequence[float] = HISTORY_BUCKETS
) -> pd.DataFrame:
    """NDCG@k and HR@k per history-length bucket: columns ``(metric, model)``, plus ``n_cases``."""
    columns, counts = {}, None
    for name, r in ranked.items():
        valid = ~np.isnan(r.ranks)
        lengths = np.broadcast_to(r.history_length[:, None], r.ranks.shape)[valid]
        ranks = r.ranks[valid]
        columns[(f"ndcg_at_{k}", name)] = _bucketed(ndcg_at(ranks, k), lengths, edges)
        columns[(f"hr_at_{k}", name)] = _bucketed(hit_at(ranks, k), lengths, edges)
        counts = _bucket_counts(lengths, edges)  # the same cases for every model
    table = pd.DataFrame(columns)
    table.index = _bucket_labels(edges, "items")
    table["n_cases"] = counts
    return table


def recall_by_title_age(
    ranked: Mapping[str, RankedTargets],
    item_release_ts: np.ndarray,
    k: int = COLD_START_K,
    edges_days: Sequence[float] = AGE_BUCKETS_DAYS,
) -> pd.DataFrame:
    """Recall@k per bucket of title age at interaction time (young titles are the cold start).

    ``item_release_ts`` (n_items,) unix seconds, NaN when unknown; targets of titles with an
    unknown release are left out, and ones "before release" (bad catalogue dates) count as age 0.
    """
    columns, counts = {}, None
    for name, r in ranked.items():
        valid = ~np.isnan(r.ranks)
        release = item_release_ts[r.targets.clip(min=0)]
        valid &= ~np.isnan(release)
        age_days = np.maximum(r.target_ts - release, 0) / _SECONDS_PER_DAY
        columns[name] = _bucketed(hit_at(r.ranks[valid], k), age_days[valid], edges_days)
        counts = _bucket_counts(age_days[valid], edges_days)
    table = pd.DataFrame(columns)
    table.index = _bucket_labels(edges_days, "days")
    table["n_cases"] = counts
    return table


def _plot_buckets(table: pd.DataFrame, columns: list, ylabel: str, title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    x = np.arange(len(table.index))
    for column in columns:
        label = column[-1] if isinstance(column, tuple) else column
        ax.plot(x, table[column].to_numpy(dtype=float), marker="o", label=str(label))
    ax.set_xticks(x, table.index, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _save(fig, ax, path)


def _save(fig, ax, path: Path) -> Path:
    """Shared finish of every report plot: grid, legend, PNG on disk, figure freed."""
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_losses(loss_histories: Mapping[str, Sequence[float]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, losses in loss_histories.items():
        ax.plot(np.arange(1, len(losses) + 1), np.asarray(losses, dtype=float), label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("Training curves")
    return _save(fig, ax, path)


def _cell(column: str, value: object) -> str:
    if not isinstance(value, float | np.floating):
        return str(value)
    if np.isnan(value):
        return "–"  # an empty bucket, not a zero
    return f"{value:.0f}" if column.startswith("n_") else f"{value:.4f}"


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub Markdown table, without the optional ``tabulate`` dependency of ``to_markdown``."""
    header = [table.index.name or ""] + [str(c) for c in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, row in table.iterrows():
        cells = [_cell(str(column), value) for column, value in row.items()]
        lines.append("| " + " | ".join([str(index), *cells]) + " |")
    return "\n".join(lines)


def write_report(
    out_dir: Path,
    results: Mapping[str, Mapping[str, float]] | pd.DataFrame,
    ranked: Mapping[str, RankedTargets] | None = None,
    item_release_ts: np.ndarray | None = None,
    loss_histories: Mapping[str, Sequence[float]] | None = None,
    title: str = "reelfm evaluation",
) -> ReportPaths:
    """Write the metrics table (Markdown, HTML, CSV) and the plots the inputs allow.

    ``ranked`` (model -> test ranks) adds the history-length plot, plus the title-age plot when
    ``item_release_ts`` is given; ``loss_histories`` (model -> per-step loss) adds training curves.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = metrics_table(results)
    plots: dict[str, Path] = {}
    sections: list[tuple[str, pd.DataFrame | None]] = []
    if ranked:
        by_length = metric_by_history_length(ranked)
        ndcg_columns = [c for c in by_length.columns if c[0] == "ndcg_at_10"]
        plots["ndcg_by_history_length"] = _plot_buckets(
            by_length,
            ndcg_columns,
            "NDCG@10",
            "NDCG@10 by history length",
            out_dir / "ndcg_by_history_length.png",
        )
        sections.append(("Metrics by history length", by_length))
        if item_release_ts is not None:
            by_age = recall_by_title_age(ranked, item_release_ts)
            plots["recall_by_title_age"] = _plot_buckets(
                by_age,
                list(ranked),
                f"Recall@{COLD_START_K}",
                "Recall by title age",
                out_dir / "recall_by_title_age.png",
            )
            sections.append(("Recall by title age", by_age))
    if loss_histories:
        plots["training_curves"] = _plot_losses(loss_histories, out_dir / "training_curves.png")

    csv_path = out_dir / "metrics.csv"
    table.to_csv(csv_path)
    md = [f"# {title}", "", markdown_table(table), ""]
    page = [f"<h1>{html.escape(title)}</h1>", table.to_html(float_format="{:.4f}".format)]
    for heading, frame in sections:
        flat = frame.copy()
        flat.columns = [
            " ".join(str(part) for part in c if part) if isinstance(c, tuple) else c
            for c in flat.columns
        ]
        flat.index.name = "bucket"
        md += [f"## {heading}", "", markdown_table(flat), ""]
        page += [f"<h2>{html.escape(heading)}</h2>", flat.to_html(float_format="{:.4f}".format)]
    for name, path in plots.items():
        md += [f"![{name}]({path.name})", ""]
        page.append(f'<p><img src="{html.escape(path.name)}" alt="{html.escape(name)}"></p>')
    md_path = out_dir / "metrics.md"
    md_path.write_text("\n".join(md), encoding="utf-8")
    html_path = out_dir / "metrics.html"
    html_path.write_text("<!doctype html>\n<html><body>\n" + "\n".join(page) + "\n</body></html>\n")
    return ReportPaths(
        folder=out_dir, markdown=md_path, html=html_path, table_csv=csv_path, plots=plots
    )


def log_report(folder: Path, artifact_path: str = "evaluation", run_id: str | None = None) -> None:
    """Upload the report folder to MLflow run ``run_id`` (default: the active run).

    Raises ``RuntimeError`` when there is neither, rather than letting MLflow start a stray run.
    """
    import mlflow

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"report folder {folder} does not exist; call write_report first")
    if run_id is None:
        active = mlflow.active_run()
        if active is None:
            raise RuntimeError("no active MLflow run: start one or pass run_id")
        run_id = active.info.run_id
    mlflow.MlflowClient().log_artifacts(run_id, str(folder), artifact_path)
