"""Series structure: episode order, the next-episode rule, and continuing into unseen episodes."""

from __future__ import annotations

import numpy as np
import torch

from pipelines.models import FoundationConfig, FoundationModel, SequenceBatch, pretraining_loss
from pipelines.models.foundation import NO_SUCCESSOR, title_successor
from pipelines.models.metadata import NO_SERIES, series_indices, series_position
from pipelines.models.windows import UserSequences, WindowDataset, collate_windows, history_batch
from pipelines.training import TrainConfig, train

N_FILMS, N_SERIES, EPISODES = 16, 4, 6
N_TITLES = N_FILMS + N_SERIES * EPISODES  # films first, then each series' episodes in order
SHORT_SERIES, SHORT_EPISODES = N_SERIES - 1, 3
"""The last series' episodes 4-6 (the last three titles) are a new season, released after
training: in training nobody gets past its episode 3."""
N_TRAINED = N_TITLES - (EPISODES - SHORT_EPISODES)


def test_series_indices_number_series_by_first_title_and_keep_them_as_titles_append() -> None:
    ids = [None, "s9", "s2", "s9", float("nan"), "", "s2"]
    assert series_indices(ids) == [NO_SERIES, 0, 1, 0, NO_SERIES, NO_SERIES, 1]
    assert series_indices([*ids, "s5", "s9"])[: len(ids)] == series_indices(ids)
    assert series_indices([*ids, "s5", "s9"])[len(ids) :] == [2, 0]


def test_title_successor_links_each_episode_to_the_next_of_its_series() -> None:
    # film, series 0 listed out of order (positions 2, 1, 3), series 1 unnumbered (equal).
    series = torch.tensor([NO_SERIES, 0, 0, 0, 1, 1])
    position = torch.tensor([0.0, 0.02, 0.01, 0.03, 0.0, 0.0])
    assert title_successor(series, position).tolist() == [
        NO_SUCCESSOR, 3, 1, NO_SUCCESSOR, NO_SUCCESSOR, NO_SUCCESSOR,
    ]  # fmt: skip


def episode(series: int, k: int) -> int:
    """Title index of episode ``k`` (0-based) of ``series``."""
    return N_FILMS + series * EPISODES + k


def series_model(seed: int = 0, **overrides: object) -> FoundationModel:
    """A tiny model of the catalogue before the new season (``N_TRAINED`` titles)."""
    torch.manual_seed(seed)
    config = FoundationConfig.from_preset(
        "tiny", num_titles=N_TRAINED, num_genres=2, num_series=N_SERIES, **overrides
    )
    model = FoundationModel(config)
    set_catalogue(model, N_TRAINED)
    return model


def set_catalogue(model: FoundationModel, n_titles: int) -> None:
    """Metadata of the first ``n_titles`` titles; the new season's episodes are untrained."""
    config = model.config
    series = torch.tensor([NO_SERIES] * N_FILMS + [s for s in range(N_SERIES) for _ in range(6)])
    features = torch.zeros(N_TITLES, config.metadata_dim)
    features[:, 0] = (torch.arange(N_TITLES) % 2).float()  # a genre that says nothing
    features[:, 1] = 1 - features[:, 0]
    features[N_FILMS:, 2 + 3] = 1.0  # is-series
    features[N_FILMS:, 2 + 4] = torch.tensor(
        [series_position(1, k + 1) for _ in range(N_SERIES) for k in range(EPISODES)]
    )
    trained = torch.arange(N_TITLES) < N_TRAINED
    age = torch.where(trained, 1000.0, 0.0)
    n = n_titles
    model.set_title_metadata(features[:n], age[:n], trained[:n], series[:n])


def viewers(n_users: int, length: int, seed: int, stop: int | None) -> UserSequences:
    """Members who watch one series in order, each next token its next episode with
    probability 0.6 and a random film otherwise; on ``SHORT_SERIES`` they stop after episode
    ``stop`` (None: they never stop), watching only films from there."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(n_users):
        series = user % N_SERIES
        last = EPISODES if series != SHORT_SERIES or stop is None else stop
        row, k = [], 0
        while len(row) < length:
            if k < last and rng.random() < 0.6:
                row.append(episode(series, k))
                k += 1
            else:
                row.append(int(rng.integers(0, N_FILMS)))
        rows.append(row)
    titles = np.array(rows, dtype=np.int64)
    features = [rng.integers(0, high, titles.shape) for high in (8, 6, 16, 6, 24, 7)]
    tokens = np.stack([titles, *features]).reshape(7, -1).astype(np.int64)
    offsets = np.arange(n_users + 1, dtype=np.int64) * length
    return UserSequences([f"u{i}" for i in range(n_users)], offsets, tokens)


def test_next_episode_rule_and_continuations_follow_the_furthest_episode_seen() -> None:
    model = series_model()
    set_catalogue(model, N_TITLES)
    model.eval()
    s1 = [episode(1, k) for k in range(EPISODES)]
    # Episode 3 of series 1 was seen (even if only shown), then episode 1; series 2 never.
    seen = torch.zeros(1, N_TITLES, dtype=torch.bool)
    seen[0, [s1[2], s1[0], 3]] = True
    beyond = model.beyond_next_episode(seen)[0]
    assert beyond[s1].tolist() == [False, False, False, False, True, True]
    assert beyond[[episode(2, k) for k in range(EPISODES)]].tolist() == [False] + [True] * 5
    assert not beyond[:N_FILMS].any()
    titles = torch.tensor([[s1[0], 3, s1[1], s1[2]]])
    continuing = model.continuing(titles, torch.ones_like(titles, dtype=torch.bool))[0]  # (T, N)
    assert [torch.nonzero(row).squeeze(1).tolist() for row in continuing] == [
        [s1[1]], [s1[1]], [s1[2]], [s1[3]],
    ]  # fmt: skip


def test_training_continuations_match_the_inference_set_at_every_prefix() -> None:
    """At each position, ``continuing`` is what ``recommend`` would offer after that prefix
    (successors of its episodes, themselves unseen), also with rewatches and padding."""
    model = series_model()
    set_catalogue(model, N_TITLES)
    s0, s1 = [episode(0, k) for k in range(EPISODES)], [episode(1, k) for k in range(EPISODES)]
    titles = torch.tensor(
        [
            [s1[2], s1[0], 3, s1[0], s1[1], s0[5], s0[0], s1[3], s1[1]],
            [s0[1], s0[2], s0[1], 5, s0[3], s0[0], -1, -1, -1],
        ]
    )
    mask = titles >= 0
    continuing = model.continuing(titles, mask)  # (B, T, N)
    for t in range(titles.shape[1]):
        prefix = titles[:, : t + 1]
        prefix = SequenceBatch(prefix, *[torch.zeros_like(prefix)] * 6)
        expected = model._offered(prefix) & ~model._seen(prefix)  # (B, N)
        assert torch.equal(continuing[:, t][mask[:, t]], expected[mask[:, t]]), t
    select = mask & (torch.arange(titles.shape[1]) % 2 == 0)
    assert torch.equal(model.continuing(titles, mask, select), continuing[select])


def continue_rank(model: FoundationModel) -> torch.Tensor:
    """(U,) 0-based rank of episode 4 of the short series after histories that watched its
    episodes 1-3, once the new season is in the catalogue (episode 4 has no trained row)."""
    set_catalogue(model, N_TITLES)
    members = viewers(64, 12, seed=1, stop=SHORT_EPISODES)
    histories = history_batch(members, [u for u in range(64) if u % N_SERIES == SHORT_SERIES])
    watched = (histories.titles == episode(SHORT_SERIES, SHORT_EPISODES - 1)).any(dim=1)
    ids, _ = model.eval().recommend(histories, k=N_TITLES)
    target = episode(SHORT_SERIES, SHORT_EPISODES)
    return (ids == target).int().argmax(dim=1)[watched]


def test_series_structure_continues_a_series_into_episodes_never_seen_in_training() -> None:
    sequences = viewers(256, 16, seed=0, stop=SHORT_EPISODES)
    loop = TrainConfig(lr=3e-3, warmup_steps=5, max_steps=80, batch_size=16, progress=False)
    ranks = {}
    for name, switches in {
        "series": {},
        "ids only": {"series_embedding": False, "continuation_bonus": False,
                     "next_episode_only": False},
    }.items():  # fmt: skip
        model = series_model(**switches)
        windows = WindowDataset(sequences, model.config.max_len, model.config.window_stride)
        train(model, pretraining_loss, windows, loop, collate_windows)
        ranks[name] = continue_rank(model)
    assert len(ranks["series"]) > 5
    # Continuing is learnt on the other series and carries over to the new season...
    assert (ranks["series"] == 0).float().mean() > 0.8
    # ...which a model that knows the new episodes by their metadata alone does not.
    assert (ranks["ids only"] == 0).float().mean() < 0.3


def test_training_ranks_only_the_episodes_recommend_would_offer() -> None:
    # Without the history's metadata a fresh model's scores are flatter: the losses below
    # compare with log(titles offered), which assumes near-equal scores.
    model = series_model(train_servable_only=True, history_metadata=False)
    # One member: film 0, then episodes 0 and 1 of series 0; targets are the next tokens.
    titles = torch.tensor([[0, episode(0, 0), episode(0, 1)]])
    mask = torch.ones_like(titles, dtype=torch.bool)
    select = torch.tensor([[True, True, True]])
    continuing = model.continuing(titles, mask, select)  # (3, N)
    # The member skips ahead to episode 4 of series 1 at the last position.
    target = torch.tensor([episode(0, 0), episode(0, 1), episode(1, 3)])
    blocked = model.unservable(continuing, target)  # (3, N)
    films = torch.arange(N_FILMS)
    assert not blocked[:, films].any()  # films are always offered
    firsts = torch.tensor([episode(s, 0) for s in range(N_SERIES)])
    assert not blocked[:, firsts].any()  # so is every series' first episode
    # After episode 0, episode 1 continues the series; after episode 1, episode 2 does.
    assert not blocked[1, episode(0, 1)] and not blocked[2, episode(0, 2)]
    assert blocked[0, episode(0, 1)] and blocked[1, episode(0, 2)]  # not yet reached
    assert blocked[0, episode(2, 3)] and blocked[2, episode(3, 1)]  # unstarted series
    assert not blocked[2, episode(1, 3)]  # a position's own target is never blocked
    batch = SequenceBatch(
        titles=titles,
        actions=torch.zeros_like(titles),
        watch_fraction=torch.zeros_like(titles),
        gaps=torch.zeros_like(titles),
        devices=torch.zeros_like(titles),
        hours=torch.zeros_like(titles),
        weekdays=torch.zeros_like(titles),
        targets=target[None, :],
    )
    with torch.no_grad():
        loss = float(model.eval()(batch).next_title_loss)
        model.config.train_servable_only = False
        everything = float(model(batch).next_title_loss)
    # A fresh model scores titles almost alike: the loss is about log(titles offered), where
    # ranking the whole catalogue costs about log(N_TRAINED).
    offered = (~blocked).sum(dim=1).double()
    assert abs(loss - float(offered.log().mean())) < 0.05
    assert abs(everything - np.log(N_TRAINED)) < 0.05


def test_id_dropout_hides_young_series_whole_and_inference_never_does() -> None:
    torch.manual_seed(0)
    model = series_model(cold_title_rate=0.5, cold_title_max_age_days=2000.0)
    young = torch.arange(N_TRAINED) >= N_FILMS + EPISODES  # series 1-3 are young
    model.title_age_days = torch.where(young, 10.0, 5000.0)
    model.train()
    episodes = model.title_series != NO_SERIES
    dropped_whole = set()
    for _ in range(50):
        warm, with_series = model.draw_titles()
        whole = episodes & ~with_series
        # A series loses its embedding only as a whole, and its episodes their ids with it.
        for s in model.title_series[whole].unique().tolist():
            members = model.title_series == s
            assert not with_series[members].any() and not warm[members].any()
            dropped_whole.add(s)
        assert with_series[model.title_series == 0].all()  # series 0 has old episodes
        assert warm[~young].all()  # old titles keep their ids
    assert dropped_whole == {1, 2, 3}
    model.eval()
    warm, with_series = model.draw_titles()
    assert torch.equal(warm, model.title_trained) and torch.equal(with_series, episodes)


def test_a_series_without_trained_episodes_never_uses_its_series_embedding() -> None:
    """Before its release a series is in the catalogue but never chosen: a row trained then
    learns only "never watched", so a series none of whose episodes was trained gets none."""
    model = series_model()  # id dropout on, but every trained title is old: none hidden
    unreleased = model.title_series == 2
    model.title_trained = model.title_trained & ~unreleased
    for training in (True, False):
        model.train(training)
        for _ in range(20):
            warm, with_series = model.draw_titles()
            assert not with_series[unreleased].any() and not warm[unreleased].any()
    model.train()
    model.zero_grad()
    model.title_embeddings().sum().backward()
    grad = model.series_embedding.weight.grad
    assert torch.count_nonzero(grad[2]) == 0  # its row is never used, so never trained
    assert torch.count_nonzero(grad[0]) > 0  # series 0 has trained, old episodes
    model.eval()
    _, with_series = model.draw_titles()
    assert with_series[model.title_series == 3].all()  # a new season of a trained series keeps it
