r"""Choose model settings on a validation day of a synthetic lake, never on the test day.

Trains the foundation model on the tokens strictly before ``--day`` (as ``models/foundation``
does for that partition) and scores it on the members' first new title on that day against the
generator's oracle (and the oracle at the cut-off), then splits NDCG@10 by the kind of target:
a title released that very day, the next episode of a series the member is in, the first
episode of a series new to them, a film released in the week before, an older film. Settings
that move the overall figure by less than the seed-to-seed spread are noise. ``--by-history
KIND`` splits one kind's figure by the member's history length, ``--ensemble`` also scores the
seeds' models averaged (if that beat its members, more data or regularisation would pay), and
``--target-days N`` takes targets from N days from ``--day`` on, enough titles released in them
for each model's cold-start recall@50 (in the table) to be read.

    .venv/bin/python -m pipelines.sources.synthetic --preset demo --seed 7 --bad-rate 0.002 \
        --landing-root /tmp/demo/landing
    REELFM_HOME=/tmp/demo .venv/bin/python -m jobs.cli run --start 2026-01-01 --days 6
    .venv/bin/python benchmarks/synthetic_validation.py --home /tmp/demo --day 2026-01-05 \
        --set cold_title_rate=0.25 --seed 0 --seed 1

The lake's tables are read once with Spark and cached as a pickle beside the lake.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import pickle
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.evaluation.daily import (  # noqa: E402
    DayEvaluationConfig,
    EvaluationInputs,
    RegisteredVersion,
    evaluate_day,
    read_evaluation_inputs,
)
from pipelines.evaluation.metrics import ndcg_at  # noqa: E402
from pipelines.evaluation.splits import index_interactions  # noqa: E402
from pipelines.settings import Settings  # noqa: E402
from pipelines.training.pretrain import pretrain_foundation  # noqa: E402

KINDS = ("released that day", "next episode", "first episode", "film <= 7 days", "older film")
HISTORY_EDGES = (1, 4, 8, 16, 32)
"""Lower edges of the history-length buckets of ``--by-history`` (tokens before the day)."""


def load_inputs(home: Path, day: dt.date, target_days: int = 1) -> EvaluationInputs:
    days = "" if target_days == 1 else f"_{target_days}d"
    cache = home / f"_validation_inputs_{day}{days}.pkl"
    if cache.exists():
        return pickle.loads(cache.read_bytes())
    from pipelines.spark_session import build_spark_session

    settings = Settings.from_env().with_home(home)
    inputs = read_evaluation_inputs(build_spark_session(settings), settings, day, target_days)
    cache.write_bytes(pickle.dumps(inputs))
    return inputs


def parse_value(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def target_kinds(inputs: EvaluationInputs, day: dt.date, split) -> np.ndarray:
    """(U,) kind index (``KINDS``) of each member's first target."""
    frame = inputs.tokens.assign(ts=pd.to_datetime(inputs.tokens["ts"], utc=True))
    interactions = index_interactions(frame, catalogue=inputs.tokenizer.title_ids)
    item_ids = np.asarray(interactions.item_ids)
    titles = inputs.titles.set_index("title_id")
    release = pd.to_datetime(titles["release_date"]).dt.date
    kinds = np.empty(len(split.test.users), dtype=np.int64)
    for u, (history, target) in enumerate(
        zip(split.test.exclude, split.test.targets[:, 0], strict=True)
    ):
        title = item_ids[target]
        series = titles.at[title, "series_id"]
        released = release[title]
        if released >= day:
            kinds[u] = 0
        elif isinstance(series, str) and series:
            seen_series = set(titles.loc[item_ids[history], "series_id"].dropna())
            kinds[u] = 1 if series in seen_series else 2
        else:
            kinds[u] = 3 if (day - released).days <= 7 else 4
    return kinds


def target_is_episode(inputs: EvaluationInputs, split) -> np.ndarray:
    """(U,) bool: each member's first target is an episode of a series."""
    frame = inputs.tokens.assign(ts=pd.to_datetime(inputs.tokens["ts"], utc=True))
    item_ids = np.asarray(index_interactions(frame, catalogue=inputs.tokenizer.title_ids).item_ids)
    series = inputs.titles.set_index("title_id")["series_id"]
    targets = series.reindex(item_ids[split.test.targets[:, 0]])
    return targets.map(lambda s: isinstance(s, str) and bool(s)).to_numpy(dtype=bool)


def by_history(gain: np.ndarray, lengths: np.ndarray, keep: np.ndarray) -> dict[str, float]:
    """Mean of ``gain`` over the ``keep`` targets in each history-length bucket."""
    out = {}
    for lo, hi in zip(HISTORY_EDGES, (*HISTORY_EDGES[1:], None), strict=True):
        inside = keep & (lengths >= lo) & (True if hi is None else lengths < hi)
        label = f"{lo}+" if hi is None else f"{lo}-{hi - 1}"
        out[f"{label} ({int(inside.sum())})"] = gain[inside].mean() if inside.any() else np.nan
    return out


class SeedEnsemble:
    """The seeds' models as one recommender: the mean of their log-softmax over the titles each
    offers. If it beats its members, they differ by variance more training data would remove."""

    def __init__(self, models: list) -> None:
        self.models = models
        self.num_titles = models[0].num_titles

    def eval(self) -> SeedEnsemble:
        return self

    def recommend(self, history, k, exclude_seen=True, request_times=None):
        total = 0.0
        for model in self.models:
            ids, values = model.recommend(history, k, exclude_seen, request_times)
            scores = torch.full((len(ids), self.num_titles), float("-inf"))
            total = total + torch.log_softmax(scores.scatter_(1, ids, values), dim=1)
        values, ids = torch.nan_to_num(total / len(self.models), nan=float("-inf")).topk(k, 1)
        return ids, values


def shifted_model(model, inputs: EvaluationInputs, day: dt.date, shift: float):
    """A copy of ``model`` whose title logits add ``shift`` to titles released on or after
    ``day`` (through the freshness table's 'not yet released / today' buckets is not enough:
    those also hold titles from training, so the copy wraps ``title_logits``)."""
    release = pd.to_datetime(inputs.titles.set_index("title_id")["release_date"]).dt.date
    new = torch.tensor([release[t] >= day for t in inputs.tokenizer.title_ids])
    clone = copy.deepcopy(model)
    original = clone.title_logits

    def title_logits(query, titles, *args, **kwargs):
        logits = original(query, titles, *args, **kwargs)
        return logits + shift * new[: logits.shape[1]].to(logits.dtype)

    clone.title_logits = title_logits
    return clone


def windowed_model(model, window: int):
    """A copy of ``model`` that reads only each history's latest ``window`` tokens (seen titles
    and the series' next episodes still come from the whole history)."""
    clone = copy.deepcopy(model)
    clone.config.max_len = min(window, model.config.max_len)
    return clone


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="REELFM_HOME of the lake")
    parser.add_argument("--day", type=dt.date.fromisoformat, required=True, help="validation day")
    parser.add_argument("--set", action="append", default=[], help="model override key=value")
    parser.add_argument("--train-set", action="append", default=[], help="loop override k=v")
    parser.add_argument("--seed", type=int, action="append", help="seeds (repeatable; default 0)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--keep", type=Path, help="save each seed's model under KEEP/seed-N")
    parser.add_argument(
        "--ensemble",
        action="store_true",
        help="also score the seeds' models together (mean log-softmax): is the gap variance?",
    )
    parser.add_argument(
        "--by-history",
        choices=KINDS,
        help="also split this kind's NDCG@10 by the member's history length (tokens before "
        "the day): where does the model fall behind the oracles?",
    )
    parser.add_argument(
        "--new-title-shift",
        type=float,
        action="append",
        help="also score with this logit added to titles released on or after the day "
        "(repeatable): is the model's level for brand-new titles off?",
    )
    parser.add_argument(
        "--serve-window",
        type=int,
        action="append",
        help="also score with each history cut to its latest N tokens (repeatable): do older "
        "tokens help or hurt the trained model?",
    )
    parser.add_argument(
        "--target-days",
        type=int,
        default=1,
        help="targets from DAY .. DAY + N - 1 (default 1): with 3 or more the titles released "
        "in those days are enough targets for cold-start recall@50 to be read",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = {k: parse_value(v) for k, v in (s.split("=", 1) for s in args.set)}
    train_overrides = {k: parse_value(v) for k, v in (s.split("=", 1) for s in args.train_set)}
    inputs = load_inputs(args.home, args.day, args.target_days)
    rows, split_rows, models = {}, {}, []
    for seed in args.seed or [0]:
        started = time.process_time()
        with tempfile.TemporaryDirectory() as scratch:
            out = args.keep / f"seed-{seed}" if args.keep else Path(scratch)
            result = pretrain_foundation(
                inputs.tokens,
                inputs.titles,
                inputs.tokenizer,
                args.day,
                "demo",
                "demo",
                out,
                seed=seed,
                model_overrides=overrides,
                train_overrides=train_overrides,
            )
        cpu = time.process_time() - started
        models.append(result.model)
        version = RegisteredVersion("validation", result.model, inputs.tokenizer, {})
        config = DayEvaluationConfig(als=False, sasrec=False, target_days=args.target_days)
        evaluation = evaluate_day(inputs, version, args.day, config)
        kinds = target_kinds(inputs, args.day, evaluation.split)
        new_episode = (kinds == 0) & target_is_episode(inputs, evaluation.split)
        ranked_all = dict(evaluation.ranked)
        for shift in args.new_title_shift or []:
            shifted = shifted_model(result.model, inputs, args.day, shift)
            again = evaluate_day(
                inputs, replace(version, model=shifted), args.day, replace(config, oracle=False)
            )
            ranked_all[f"foundation seed {seed} +{shift} new"] = again.ranked["foundation"]
        for window in args.serve_window or []:
            cut = windowed_model(result.model, window)
            again = evaluate_day(
                inputs, replace(version, model=cut), args.day, replace(config, oracle=False)
            )
            ranked_all[f"foundation seed {seed} latest {window}"] = again.ranked["foundation"]
        for name, ranked in ranked_all.items():
            if name.startswith("most_popular"):
                continue
            gain = ndcg_at(ranked.ranks[:, 0], 10)
            row = {"NDCG@10": gain.mean()}
            row.update({k: gain[kinds == i].mean() for i, k in enumerate(KINDS)})
            # The brand-new targets split: new films, and episodes of new series or seasons.
            row["new film"] = gain[(kinds == 0) & ~new_episode].mean()
            row["new episode"] = gain[new_episode].mean()
            if name in evaluation.table.index:
                row["cold-start recall@50"] = evaluation.table.at[name, "cold_start_recall_at_50"]
            if ranked.new_ranks is not None:  # the same targets ranked among the new titles alone
                row["that day, among new"] = ndcg_at(ranked.new_ranks[kinds == 0, 0], 10).mean()
            if name == "foundation":
                row.update({"steps": result.train.steps, "CPU s": round(cpu)})
                name = f"foundation seed {seed}"
            rows[name] = row
            if args.by_history:
                chosen = kinds == KINDS.index(args.by_history)
                split_rows[name] = by_history(gain, ranked.history_length, chosen)
        counts = {k: int((kinds == i).sum()) for i, k in enumerate(KINDS)}
        counts["new episode"] = int(new_episode.sum())
    if args.ensemble and len(models) > 1:
        together = replace(version, model=SeedEnsemble(models))
        again = evaluate_day(inputs, together, args.day, replace(config, oracle=False))
        gain = ndcg_at(again.ranked["foundation"].ranks[:, 0], 10)
        row = {"NDCG@10": gain.mean()}
        row.update({k: gain[kinds == i].mean() for i, k in enumerate(KINDS)})
        rows[f"ensemble of {len(models)} seeds"] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    print(f"\n{args.day}: overrides {overrides} {train_overrides}; targets by kind {counts}")
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    if split_rows:
        print(f"\nNDCG@10 on '{args.by_history}' targets by history length (targets):")
        split = pd.DataFrame.from_dict(split_rows, orient="index")
        print(split.to_string(float_format=lambda v: f"{v:.4f}"))
    if "oracle" in rows:
        for name in rows:
            if name.startswith("foundation"):
                ratio = rows[name]["NDCG@10"] / rows["oracle"]["NDCG@10"]
                print(f"{name}: {ratio:.3f} x oracle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
