"""Cold start: a title added after training is recommended to the members its metadata suits."""

from __future__ import annotations

import numpy as np
import torch

from pipelines.models import FoundationConfig, FoundationModel, pretraining_loss
from pipelines.models.windows import UserSequences, WindowDataset, collate_windows, history_batch
from pipelines.training import TrainConfig, train

GENRES, PER_GENRE = 4, 8
N_TITLES = GENRES * PER_GENRE  # title t has genre t // PER_GENRE


def genre_loyal_members(n_users: int, length: int, seed: int) -> tuple[UserSequences, np.ndarray]:
    """Members who only ever watch titles of one genre; returns sequences and each one's genre."""
    rng = np.random.default_rng(seed)
    genre = rng.integers(0, GENRES, n_users)
    titles = genre[:, None] * PER_GENRE + rng.integers(0, PER_GENRE, (n_users, length))
    features = [rng.integers(0, high, (n_users, length)) for high in (8, 6, 16, 6, 24, 7)]
    tokens = np.stack([titles, *features]).reshape(7, -1).astype(np.int64)
    offsets = np.arange(n_users + 1, dtype=np.int64) * length
    return UserSequences([f"u{i}" for i in range(n_users)], offsets, tokens), genre


def genre_features(genres: torch.Tensor, config: FoundationConfig) -> torch.Tensor:
    """Metadata rows: the genre one-hot, then scalar columns that say nothing about taste."""
    rows = torch.zeros(len(genres), config.metadata_dim)
    rows[torch.arange(len(genres)), genres] = 1.0
    rows[:, config.num_genres :] = torch.rand(len(genres), config.metadata_dim - config.num_genres)
    return rows


def test_a_title_added_after_training_is_recommended_to_matching_members() -> None:
    torch.manual_seed(0)
    config = FoundationConfig.from_preset("tiny", num_titles=N_TITLES, num_genres=GENRES)
    model = FoundationModel(config)
    genres = torch.arange(N_TITLES) // PER_GENRE
    model.set_title_metadata(
        genre_features(genres, config),
        torch.rand(N_TITLES) * 3000,
        torch.ones(N_TITLES, dtype=torch.bool),
    )
    sequences, _ = genre_loyal_members(128, 17, seed=0)
    windows = WindowDataset(sequences, config.max_len, config.window_stride)
    train(model, pretraining_loss, windows,
          TrainConfig(lr=3e-3, warmup_steps=5, max_steps=60, batch_size=16, progress=False),
          collate_windows)  # fmt: skip

    # Append one title of genre 2, never trained on: it must be scored from metadata alone.
    new_genre = torch.tensor([2])
    model.set_title_metadata(
        torch.cat([model.title_features, genre_features(new_genre, config)]),
        torch.cat([model.title_age_days, torch.zeros(1)]),
        torch.cat([model.title_trained, torch.zeros(1, dtype=torch.bool)]),
    )
    new_title = N_TITLES
    model.eval()
    embedding = model.title_embeddings()[new_title]
    assert embedding.norm() > 0
    torch.testing.assert_close(embedding, model.metadata_proj(model.title_features[new_title]))

    members, genre = genre_loyal_members(200, 10, seed=1)
    # Rank every title, seen ones included: a matching member should rank the new title right
    # after (or among) the 8 titles of its genre; any other member below all 8 of its own.
    ids, _ = model.recommend(
        history_batch(members, range(len(members))), k=N_TITLES + 1, exclude_seen=False
    )
    rank = (ids == new_title).int().argmax(dim=1)  # (U,) 0 = first
    matching = torch.from_numpy(genre == new_genre.item())
    assert (rank[matching] <= PER_GENRE).float().mean() > 0.8
    assert (rank[~matching] >= PER_GENRE).float().mean() > 0.9
