"""Freshness: a title's age at the request moves its score, so a title released after training
(never trained on, metadata only) is recommended while it is new."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import torch

from pipelines.models import FoundationConfig, FoundationModel, pretraining_loss
from pipelines.models.foundation import FRESHNESS_SCALE
from pipelines.models.metadata import release_feature
from pipelines.models.windows import UserSequences, WindowDataset, collate_windows, history_batch
from pipelines.training import TrainConfig, train

DAY = 86_400
START = date(2026, 1, 1)
START_TS = (START - date(1970, 1, 1)).days * DAY
N_OLD, N_NEW = 16, 8  # old titles 0..15 (Zipf popular, 0 first); title 16 + d is released on day d


def catalogue(release_days: list[int], config: FoundationConfig) -> torch.Tensor:
    """Metadata rows of titles released ``release_days`` days after START; genres all 0."""
    rows = torch.zeros(len(release_days), config.metadata_dim)
    rows[:, config.num_genres] = torch.tensor(
        [release_feature(START + timedelta(days=d)) for d in release_days]
    )
    return rows


def fresh_loving_members(n_users: int, length: int, seed: int) -> UserSequences:
    """Members over days 0..N_NEW-1: half their choices are the title released that day, the
    rest an old title by Zipf popularity (titles 8..15 are rarely chosen)."""
    rng = np.random.default_rng(seed)
    old_p = 1.0 / np.arange(1, N_OLD + 1) ** 1.5
    old_p /= old_p.sum()
    times = np.sort(rng.integers(0, N_NEW * DAY, (n_users, length)), axis=1)  # (U, L)
    day = times // DAY
    fresh = rng.random((n_users, length)) < 0.5
    titles = np.where(fresh, N_OLD + day, rng.choice(N_OLD, (n_users, length), p=old_p))
    tokens = np.zeros((7, n_users * length), dtype=np.int64)
    tokens[0] = titles.reshape(-1)
    offsets = np.arange(n_users + 1, dtype=np.int64) * length
    return UserSequences(
        [f"u{i}" for i in range(n_users)], offsets, tokens, (START_TS + times).reshape(-1)
    )


def test_age_buckets_are_log2_days_with_unreleased_first_and_old_titles_at_zero() -> None:
    config = FoundationConfig.from_preset("tiny", num_titles=10, num_genres=1)
    model = FoundationModel(config)
    ages = [-1, 0, 1, 2, 3, 6, 7, 126, 127, 3000]  # days from release to the request
    model.set_title_metadata(
        catalogue([-a for a in ages], config), torch.zeros(10), torch.ones(10, dtype=torch.bool)
    )
    with torch.no_grad():
        model.freshness_bias.copy_(torch.arange(1.0, 9.0) / FRESHNESS_SCALE)  # bucket b: b + 1
    noon = torch.tensor([START_TS + DAY // 2])  # half a day after each release: same whole days
    bias, titles = model.freshness(noon)
    assert titles.tolist() == list(range(8))  # 127 and 3000 days old: past the last bucket
    torch.testing.assert_close(bias[0], torch.tensor([1.0, 2.0, 3.0, 3.0, 4.0, 4.0, 5.0, 8.0]))
    every, _ = model.freshness(noon, torch.arange(10))
    assert every[0, 8:].tolist() == [0.0, 0.0]
    torch.testing.assert_close(every[0, :8], bias[0])
    assert config.freshness_horizon_days == 127


def test_a_title_released_after_training_is_recommended_while_new() -> None:
    torch.manual_seed(0)
    # These members rewatch old titles (and are served with exclude_seen=False), so repeats
    # are targets here.
    config = FoundationConfig.from_preset(
        "tiny", num_titles=N_OLD + N_NEW, num_genres=1, skip_repeat_targets=False
    )
    model = FoundationModel(config)
    released = [-3000] * N_OLD + list(range(N_NEW))
    model.set_title_metadata(
        catalogue(released, config), torch.zeros(N_OLD + N_NEW), torch.ones(N_OLD + N_NEW).bool()
    )
    windows = WindowDataset(fresh_loving_members(192, 17, seed=0), config.max_len, 8)
    train(model, pretraining_loss, windows,
          TrainConfig(lr=3e-3, warmup_steps=5, max_steps=80, batch_size=32, progress=False),
          collate_windows)  # fmt: skip

    # A title released on day 10, after every training token: no id embedding, metadata only.
    new_title, release = N_OLD + N_NEW, N_NEW + 2
    model.set_title_metadata(
        catalogue([*released, release], config),
        torch.zeros(N_OLD + N_NEW + 1),
        torch.cat([model.title_trained, torch.zeros(1, dtype=torch.bool)]),
    )
    model.eval()
    members = fresh_loving_members(64, 10, seed=1)
    history = history_batch(members, range(len(members)))

    def ranks_at(day: float) -> torch.Tensor:
        when = torch.full((len(members),), START_TS + int(day * DAY))
        ids, _ = model.recommend(history, k=new_title + 1, exclude_seen=False, request_times=when)
        return (ids == new_title).int().argmax(dim=1)  # (U,) 0 = first

    new, year_later = ranks_at(release + 0.5), ranks_at(release + 365)
    # On its release day it is among the top 3 of 25 for everyone, ahead of all but the most
    # popular old titles; a year later, when its age says nothing, it falls behind more of them.
    assert (new <= 2).all()
    assert (year_later > new).all() and (year_later >= 4).all()
