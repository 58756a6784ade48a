"""The evaluation report: a models × metrics table as Markdown and HTML, plots as PNG.

``eval/report`` and the MovieLens benchmark write the same folder: ``metrics.md``,
``metrics.html``, ``metrics.csv`` and one PNG per plot (NDCG@10 and HR@10 by history length,
cold-start recall by title age, training loss curves), with the quality bars (a model's metric
over a reference's, pass or fail) and notes when given. ``log_report`` copies the folder into an
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

from pipelines.evaluation.metrics import (
    COLD_START_K,
    METRIC_NAMES,
    RankedTargets,
    hit_at,
    ndcg_at,
    paired_ndcg_difference,
)

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


@dataclass(frozen=True)
class QualityBar:
    """A ratio one model's metric must reach against a reference model's metric."""

    name: str  # row label, also the MLflow metric and Dagster metadata key
    metric: str  # the evaluated model's metric (a column of the metrics table)
    reference: str  # the model (row of the metrics table) it is divided by
    reference_metric: str  # the reference's metric
    threshold: float  # the bar passes when model metric / reference metric >= threshold


SYNTHETIC_BARS: tuple[QualityBar, ...] = (
    QualityBar("ndcg_at_10_vs_oracle", "ndcg_at_10", "oracle", "ndcg_at_10", 0.80),
    QualityBar("ndcg_at_10_vs_most_popular", "ndcg_at_10", "most_popular", "ndcg_at_10", 2.0),
    QualityBar(
        "cold_start_recall_at_50_vs_most_popular_new",
        "cold_start_recall_at_50",
        "most_popular_new",
        "cold_start_recall_at_50",
        2.0,
    ),
)
"""Issue 3's quality bars on synthetic data (demo scale): NDCG@10 at least 0.8 x the oracle's and
2 x most-popular's; cold-start recall@50 at least 2 x most-popular-among-new's."""


ORACLE = "oracle"
"""The metrics-table row of the synthetic world's true choice model, when it was evaluated."""
ORACLE_AT_CUTOFF = "oracle_at_cutoff"
"""The row of that model without the popularity of titles not yet released at the cut-off."""
ORACLE_FROM_HISTORY = "oracle_from_history"
"""The row of the oracle at the cut-off with each member's taste inferred from their history."""


def quality_bars(
    table: pd.DataFrame, model: str, bars: Sequence[QualityBar] = SYNTHETIC_BARS
) -> pd.DataFrame:
    """One row per bar: ``value`` (the model's), ``reference_value``, ``ratio``, ``threshold``,
    ``passed`` (True / False, or None when the ratio is undefined) and ``note``.

    A bar whose reference model or metric is missing (no oracle off synthetic data, no cold-start
    target) gets ratio NaN and a note saying why, never a ratio of 0. A zero reference gives an
    infinite ratio when the model's metric is positive. Every metric here is at most 1, so a bar
    whose threshold x reference exceeds 1 cannot pass: it still says FAIL, and the note says
    that no model could have passed it; so does a bar the oracle itself (when in the table)
    falls short of.
    """
    if model not in table.index:
        raise ValueError(f"model {model!r} is not in the metrics table ({list(table.index)})")
    rows = {}
    for bar in bars:
        value, reference, note = _metric(table, model, bar.metric), np.nan, ""
        if bar.reference not in table.index:
            note = f"{bar.reference} was not evaluated"
        else:
            reference = _metric(table, bar.reference, bar.reference_metric)
        if not note and (np.isnan(value) or np.isnan(reference)):
            note = f"{bar.metric} is undefined here (no case to measure it on)"
        ratio = np.nan
        if not note:
            if reference > 0:
                ratio = value / reference
            elif value > 0:
                ratio, note = np.inf, f"{bar.reference} scores 0"
            else:
                note = f"{model} and {bar.reference} both score 0"
        if not note and bar.threshold * reference > 1:
            note = (
                f"unattainable: {bar.threshold:g} x {bar.reference}'s {reference:.3f} is above 1, "
                f"the most {bar.metric} can be"
            )
        ceiling = _oracle_ratio(table, bar, reference)
        if not note and ceiling < bar.threshold:
            note = (
                f"out of reach here: even the oracle (the best possible ranking) reaches "
                f"{ceiling:.2f} x {bar.reference}"
            )
        if bar.reference == ORACLE and not note:
            note = _knowable_note(table, value, bar.reference_metric)
        rows[bar.name] = {
            "value": value,
            "reference": bar.reference,
            "reference_value": reference,
            "ratio": ratio,
            "threshold": bar.threshold,
            "passed": None if np.isnan(ratio) else bool(ratio >= bar.threshold),
            "note": note,
        }
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "bar"
    return frame


def _knowable_note(table: pd.DataFrame, value: float, metric: str) -> str:
    """The model's ``value`` against the oracles that know only what was knowable (those in
    ``table``): at the cut-off, and from the members' histories."""
    described = {
        ORACLE_AT_CUTOFF: "the oracle without the popularity of titles released on the "
        "evaluated days",
        ORACLE_FROM_HISTORY: "that oracle with each member's taste inferred from their history",
    }
    parts = []
    for name, meaning in described.items():
        if name in table.index:
            knowable = _metric(table, name, metric)
            parts.append(f"{value / knowable:.3f} x {name} ({knowable:.4f}), {meaning}")
    return "; ".join(parts)


def _oracle_ratio(table: pd.DataFrame, bar: QualityBar, reference: float) -> float:
    """The oracle's own ratio on ``bar`` (the most any model can reach), NaN without an oracle
    or when the bar is measured against the oracle itself."""
    if bar.reference == ORACLE or ORACLE not in table.index or not reference > 0:
        return np.nan
    return _metric(table, ORACLE, bar.metric) / reference


def _metric(table: pd.DataFrame, model: str, metric: str) -> float:
    if metric not in table.columns:
        return np.nan
    return float(table.loc[model, metric])


def bars_markdown(bars: pd.DataFrame) -> str:
    """``quality_bars`` as a Markdown table, with pass / FAIL / n/a."""
    return markdown_table(_bars_for_display(bars))


def _bars_for_display(bars: pd.DataFrame) -> pd.DataFrame:
    shown = bars.copy()
    shown["ratio"] = [
        "–" if np.isnan(r) else ("inf" if np.isinf(r) else ratio_text(r, t, 3))
        for r, t in zip(bars["ratio"], bars["threshold"], strict=True)
    ]
    shown["threshold"] = [f">= {t:g}" for t in bars["threshold"]]
    shown["passed"] = [{True: "pass", False: "FAIL"}.get(p, "n/a") for p in bars["passed"]]
    return shown.rename(columns={"passed": "result"})


def ratio_text(ratio: float, threshold: float, digits: int) -> str:
    """``ratio`` to ``digits`` decimals, or more where rounding would put it on the other side
    of ``threshold``: 0.79987 against 0.8 reads 0.7999, never a failing 0.800."""
    text = f"{ratio:.{digits}f}"
    while (float(text) >= threshold) != (ratio >= threshold) and digits < 8:
        digits += 1
        text = f"{ratio:.{digits}f}"
    return text


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


def paired_differences(ranked: Mapping[str, RankedTargets], model: str) -> pd.DataFrame:
    """``model``'s NDCG@10 minus each other model's, paired over the same cases: one row per
    other model (``metrics.paired_ndcg_difference``); an interval that excludes 0 is a
    difference one evaluation can tell from noise."""
    if model not in ranked:
        raise ValueError(f"no ranking of {model!r} to compare with; have {sorted(ranked)}")
    rows = {
        other: paired_ndcg_difference(ranked[model], ranks)
        for other, ranks in ranked.items()
        if other != model
    }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = f"{model} minus"
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


def _plot_bars(bars: pd.DataFrame, path: Path) -> Path:
    """Each bar's ratio (a column; none where undefined) against its threshold (a black tick)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    x = np.arange(len(bars))
    ratios = bars["ratio"].to_numpy(dtype=float)
    shown = np.where(np.isfinite(ratios), ratios, 0.0)  # undefined or infinite: no column
    colours = ["tab:green" if p else "tab:red" for p in bars["passed"]]
    ax.bar(x, shown, color=colours, label="measured ratio (green: pass)")
    ax.scatter(x, bars["threshold"], marker="_", s=900, color="black", label="bar", zorder=3)
    for i, (ratio, threshold) in enumerate(zip(ratios, bars["threshold"], strict=True)):
        text = "n/a" if np.isnan(ratio) else ratio_text(ratio, threshold, 2)
        ax.annotate(text, (i, shown[i]), ha="center", va="bottom")
    ax.set_xticks(x, [str(name).replace("_vs_", "\nvs ") for name in bars.index], fontsize=8)
    ax.set_ylabel("model metric / reference metric")
    ax.set_title("Quality bars")
    return _save(fig, ax, path)


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
    bars: pd.DataFrame | None = None,
    notes: Sequence[str] = (),
    compare: str | None = None,
) -> ReportPaths:
    """Write the metrics table (Markdown, HTML, CSV) and the plots the inputs allow.

    ``ranked`` (model -> test ranks) adds the history-length plot, plus the title-age plot when
    ``item_release_ts`` is given; ``loss_histories`` (model -> per-step loss) adds training curves;
    ``bars`` (from ``quality_bars``) adds the quality bars with pass / fail under the table, and
    ``notes`` a list of remarks (e.g. why a model is absent). With ``ranked``, ``compare`` (default:
    its first model) is set against every other model by the paired NDCG@10 difference.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = metrics_table(results)
    plots: dict[str, Path] = {}
    sections: list[tuple[str, pd.DataFrame | None]] = []
    if bars is not None:
        sections.append(("Quality bars", _bars_for_display(bars)))
        plots["quality_bars"] = _plot_bars(bars, out_dir / "quality_bars.png")
    if ranked:
        compare = next(iter(ranked)) if compare is None else compare
        if len(ranked) > 1:
            heading = f"NDCG@10 of {compare} against each model, paired per case"
            sections.append((heading, paired_differences(ranked, compare)))
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
    if notes:
        md += ["## Notes", "", *[f"- {note}" for note in notes], ""]
        items = "".join(f"<li>{html.escape(note)}</li>" for note in notes)
        page += ["<h2>Notes</h2>", f"<ul>{items}</ul>"]
    for heading, frame in sections:
        flat = frame.copy()
        flat.columns = [
            " ".join(str(part) for part in c if part) if isinstance(c, tuple) else c
            for c in flat.columns
        ]
        flat.index.name = flat.index.name or "bucket"
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
