"""``FoundationRecommender`` on planted sequences: it learns the planted order and beats
most-popular, its SASRec ablation trains too, and features are looked up, never invented."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from pipelines.evaluation import foundation
from pipelines.evaluation.baselines import MostPopular
from pipelines.evaluation.foundation import (
    FIT_PRESETS,
    NEUTRAL_ACTION,
    FoundationRecommender,
    TokenFeatures,
    rating_actions,
    sasrec,
)
from pipelines.evaluation.metrics import evaluate
from pipelines.evaluation.splits import LeaveOneOutSplit, index_interactions, leave_one_out_split
from pipelines.schemas import ACTIONS

N_ITEMS = 80


@pytest.fixture(autouse=True)
def one_thread():
    """The machine is shared: train on one thread, and give the setting back afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _planted(n_users: int = 240, length: int = 10, seed: int = 0) -> pd.DataFrame:
    """Every member walks the catalogue in order (i -> i + 1) from a random start; the most
    popular titles are therefore no better than any other guess."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        start = int(rng.integers(N_ITEMS))
        for t in range(length):
            item = (start + t) % N_ITEMS
            rows.append((f"u{u:03d}", f"t{item:02d}", 1_000 + t, float(1 + (item % 5))))
    return pd.DataFrame(rows, columns=["user_id", "title_id", "ts", "rating"])


def _titles() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "title_id": [f"t{i:02d}" for i in range(N_ITEMS)],
            "genres": [[f"g{i % 3}"] for i in range(N_ITEMS)],
            "release_date": [None] * N_ITEMS,
            "runtime_seconds": [None] * N_ITEMS,
            "maturity": [None] * N_ITEMS,
            "series_id": [None] * N_ITEMS,
        }
    )


def test_rating_actions_bucket_ratings():
    actions = rating_actions(np.array([5.0, 4.0, 3.0, 2.0, 1.0]))
    names = [ACTIONS[a] for a in actions]
    assert names == ["rated_high", "rated_high", "watched", "rated_low", "rated_low"]


def test_foundation_learns_planted_order_and_beats_most_popular():
    frame = _planted()
    interactions = index_interactions(frame)
    split = leave_one_out_split(interactions)
    # Shuffled input: features must follow index_interactions' order, not the frame's.
    shuffled = frame.sample(frac=1.0, random_state=0)
    features = TokenFeatures.from_actions(
        shuffled, interactions, rating_actions(shuffled["rating"].to_numpy())
    )
    expected = rating_actions(np.array([float(1 + int(t[1:]) % 5) for t in interactions.item_ids]))
    assert np.array_equal(features.features[0], expected[interactions.item])

    popular = MostPopular()
    popular.fit(split)
    baseline = evaluate(popular, split.test)["ndcg_at_10"]

    model = FoundationRecommender(FIT_PRESETS["tiny"], titles=_titles(), features=features)
    model.fit(split)
    # Ratings give only the action; the filler feature columns get no embedding.
    assert set(model.model.feature_embeddings) == {"action"}
    metrics = evaluate(model, split.test)
    assert metrics["ndcg_at_10"] > 0.5 > 3 * baseline
    assert model.train_result is not None and model.train_result.best_step is not None
    assert len(model.loss_history) == model.train_result.steps
    assert model.loss_history[-1] < model.loss_history[0]

    ablation = FoundationRecommender(sasrec(FIT_PRESETS["tiny"]))
    ablation.fit(split)
    assert ablation.name == "sasrec" and not ablation.model.config.use_token_features
    assert evaluate(ablation, split.test)["ndcg_at_10"] > 3 * baseline


def test_unknown_history_raises_instead_of_guessing_features():
    frame = _planted(n_users=20)
    interactions = index_interactions(frame)
    split = leave_one_out_split(interactions)
    features = TokenFeatures.from_actions(
        frame, interactions, rating_actions(frame["rating"].to_numpy())
    )
    config = replace(FIT_PRESETS["tiny"], train_overrides={"max_steps": 2, "batch_size": 4})
    model = FoundationRecommender(config, titles=_titles(), features=features)
    model.fit(split)
    assert model.score(split.test.histories[:3]).shape == (3, split.n_items)
    with pytest.raises(KeyError, match="not fitted on a split holding this history"):
        model.score([np.array([0, 5, 7])])
    # Without features every token is neutral, and any history can be scored.
    plain = FoundationRecommender(sasrec(config))
    plain.fit(split)
    assert plain.score([np.array([0, 5, 7])]).shape == (1, split.n_items)
    assert NEUTRAL_ACTION == ACTIONS.index("watched")


def _budgeted(minutes: float) -> tuple[LeaveOneOutSplit, foundation.FoundationFitConfig]:
    """A small planted split and the tiny SASRec fit with a CPU budget of ``minutes``."""
    split = leave_one_out_split(index_interactions(_planted(n_users=20)))
    config = replace(
        sasrec(FIT_PRESETS["tiny"]),
        train_minutes=minutes,
        calibration_steps=3,
        train_overrides={"batch_size": 4, "eval_every": 0},
    )
    return split, config


def test_train_minutes_sets_steps_from_a_timed_budget():
    split, config = _budgeted(0.02)  # 1.2 s
    model = FoundationRecommender(config)
    model.fit(split)
    assert model.train_result.steps >= 1
    # CPU time, not wall time: a loaded machine must not fail this test.
    assert model.fit_cpu_seconds < 10


def test_train_minutes_is_cpu_time_so_waiting_for_the_cpu_costs_no_steps(monkeypatch):
    """On a shared machine a run waits for its turn on the CPU. Waiting (here: sleeping during
    the calibration) costs wall time but no CPU time, so the run keeps its steps."""
    budget_minutes = 0.05  # 3 s of CPU
    split, config = _budgeted(budget_minutes)
    real_train = foundation.train

    def waiting_train(*args, **kwargs):
        time.sleep(2.0)  # a wall-clock budget would see 0.67 s per step and allow 1 step
        return real_train(*args, **kwargs)

    monkeypatch.setattr(foundation, "train", waiting_train)
    model = FoundationRecommender(config)
    model.fit(split)
    assert model.train_result.steps >= 20
    assert model.fit_seconds >= 4.0  # both sleeps: the calibration's and the run's
    assert model.fit_cpu_seconds <= budget_minutes * 60 * 1.5


def test_a_budgeted_fit_stops_at_its_cpu_budget_when_the_calibration_undercounts(monkeypatch):
    """Other load can make a step dearer in CPU than the calibration measured it; the run then
    stops at the budget instead of finishing the planned steps (it overspent by up to 18 %
    before the cap, two MovieLens screens sharing two cores)."""
    budget_minutes = 0.03  # 1.8 s of CPU
    split, config = _budgeted(budget_minutes)
    # A calibration that undercounts a step's cost a thousandfold.
    monkeypatch.setattr(FoundationRecommender, "_steps_for_budget", lambda self, *args: 100_000)
    model = FoundationRecommender(config)
    model.fit(split)
    assert model.train_result.out_of_cpu and model.train_result.steps < 100_000
    # The budget, plus the step that crossed it, the last validation and the data preparation.
    assert model.fit_cpu_seconds <= budget_minutes * 60 + 1.0


def test_validation_ndcg_in_the_loop_is_the_benchmarks_own_number():
    """Early stopping on ``ndcg@10`` validates with the benchmark's metric (full ranking, seen
    titles excluded), so the kept weights score on the validation items exactly what the loop
    saw at its best step."""
    frame = _planted(n_users=120)
    interactions = index_interactions(frame)
    split = leave_one_out_split(interactions)
    features = TokenFeatures.from_actions(
        frame, interactions, rating_actions(frame["rating"].to_numpy())
    )
    overrides = {
        "max_steps": 60,
        "eval_every": 10,
        "early_stopping_metric": "ndcg@10",
        "early_stopping_mode": "max",
        "early_stopping_patience": 3,
    }
    for config, kwargs in [
        (replace(FIT_PRESETS["tiny"], train_overrides=overrides), {"features": features}),
        (sasrec(replace(FIT_PRESETS["tiny"], train_overrides=overrides)), {}),
    ]:
        model = FoundationRecommender(config, titles=_titles(), **kwargs)
        model.fit(split)
        result = model.train_result
        assert result.best_step is not None and 0 < result.best_metric <= 1
        assert evaluate(model, split.validation)["ndcg_at_10"] == pytest.approx(
            result.best_metric, abs=1e-6
        )


def _spy_on_train_configs(monkeypatch) -> list:
    """The ``TrainConfig`` of every ``train`` call the fit makes (calibration first), in order."""
    seen = []
    real_train = foundation.train

    def spying_train(model, loss_fn, data, train_config, *args, **kwargs):
        seen.append(train_config)
        return real_train(model, loss_fn, data, train_config, *args, **kwargs)

    monkeypatch.setattr(foundation, "train", spying_train)
    return seen


def test_validations_per_run_spreads_validations_over_the_budget(monkeypatch):
    split = leave_one_out_split(index_interactions(_planted(n_users=20)))
    config = replace(
        sasrec(FIT_PRESETS["tiny"]),
        train_minutes=0.02,
        calibration_steps=3,
        validations_per_run=4,
        train_overrides={"batch_size": 4},
    )
    seen = _spy_on_train_configs(monkeypatch)
    FoundationRecommender(config).fit(split)
    run = seen[-1]  # the first call is the calibration
    assert run.eval_every == max(run.max_steps // 4, 1)


def test_full_budget_takes_every_step_and_ends_with_the_best_validated_weights(monkeypatch):
    """A budgeted MovieLens fit must not end on a dip of a noisy validation metric: with
    ``full_budget`` the run takes every step its CPU budget holds (the planned ones, unless the
    budget's CPU cap comes first), even when the train preset would stop after one validation
    without gain, and still ends with the best-validated weights."""
    split = leave_one_out_split(index_interactions(_planted(n_users=60)))
    config = replace(
        sasrec(FIT_PRESETS["tiny"]),
        train_minutes=0.02,
        calibration_steps=3,
        validations_per_run=10,
        full_budget=True,
        train_overrides={
            "batch_size": 4,
            "early_stopping_metric": "ndcg@10",
            "early_stopping_mode": "max",
            "early_stopping_patience": 1,
        },
    )
    seen = _spy_on_train_configs(monkeypatch)
    model = FoundationRecommender(config)
    model.fit(split)
    run, result = seen[-1], model.train_result  # the first call is the calibration
    validations = run.max_steps // run.eval_every + 1  # the periodic ones and the last step's
    assert run.early_stopping_patience > validations and run.restore_best
    assert not result.stopped_early
    assert result.steps == run.max_steps or result.out_of_cpu
    assert result.steps >= 3 * run.eval_every  # validated 3+ times: patience 1 was overridden
    assert evaluate(model, split.validation)["ndcg_at_10"] == pytest.approx(
        result.best_metric, abs=1e-6
    )


def test_movielens_presets_train_their_whole_budget_and_the_others_keep_early_stopping():
    for name in ("cpu", "cpu-b64", "cpu-b64-s1024"):
        assert FIT_PRESETS[name].full_budget, name
        assert sasrec(FIT_PRESETS[name]).full_budget, name
        # Without a budget the preset's patience still ends the run (no 200 epochs).
        assert FIT_PRESETS[name].train_overrides["early_stopping_patience"] > 0
        # A screen compares like with like: the same validations on the same metric.
        assert FIT_PRESETS[name].validations_per_run == 20, name
        assert FIT_PRESETS[name].train_overrides["early_stopping_metric"] == "ndcg@10", name
    assert not FIT_PRESETS["tiny"].full_budget
    assert not foundation.FoundationFitConfig().full_budget
