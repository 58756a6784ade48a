"""The foundation model: Hugging Face round trip, objectives, KV cache, cold start, ablations."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pipelines.models import FoundationConfig, FoundationModel, SequenceBatch
from pipelines.models import foundation as foundation_module
from pipelines.models.batches import PAD_INDEX
from pipelines.models.metadata import release_feature

N_TITLES, N_GENRES = 40, 5
NOW = date(2026, 1, 10)
"""Batches happen over the days after NOW; titles are released up to 60 days before it."""
DAY = 86_400
NOW_TS = (NOW - date(1970, 1, 1)).days * DAY


def random_batch(
    generator: torch.Generator, lengths: list[int], width: int, targets: bool = True
) -> SequenceBatch:
    """Right-padded random tokens; targets are the next title of each row (none at its end)."""
    B = len(lengths)

    def draw(high: int) -> torch.Tensor:
        return torch.randint(0, high, (B, width), generator=generator)

    real = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]  # (B, T)
    titles = torch.where(real, draw(N_TITLES), PAD_INDEX)
    next_titles = torch.roll(titles, -1, dims=1)
    next_titles[:, -1] = PAD_INDEX
    # Up to half a day between tokens, so the requests span several freshness buckets.
    times = NOW_TS + torch.cumsum(torch.randint(0, DAY // 2, (B, width), generator=generator), 1)
    target_times = torch.roll(times, -1, dims=1)
    has_target = real & (next_titles != PAD_INDEX)
    return SequenceBatch(
        titles=titles,
        actions=draw(8) * real,
        watch_fraction=draw(6) * real,
        gaps=draw(16) * real,
        devices=draw(6) * real,
        hours=draw(24) * real,
        weekdays=draw(7) * real,
        targets=torch.where(real, next_titles, PAD_INDEX) if targets else None,
        times=times * real,
        target_times=target_times * has_target if targets else None,
    )


def make_model(seed: int = 0, **overrides: object) -> FoundationModel:
    torch.manual_seed(seed)
    config = FoundationConfig.from_preset(
        "tiny", num_titles=N_TITLES, num_genres=N_GENRES, **overrides
    )
    model = FoundationModel(config)
    if config.use_metadata:
        g = torch.Generator().manual_seed(seed)
        features = (torch.rand(N_TITLES, config.metadata_dim, generator=g) > 0.5).float()
        released = torch.randint(0, 60, (N_TITLES,), generator=g)  # days before NOW
        features[:, N_GENRES] = torch.tensor(
            [release_feature(NOW - timedelta(days=int(d))) for d in released]
        )
        age = released.float()
        # Titles 20..39 are the episodes of four series of five, the rest films.
        series = torch.where(torch.arange(N_TITLES) >= 20, (torch.arange(N_TITLES) - 20) // 5, -1)
        features[:, N_GENRES + 3] = (series >= 0).float()
        features[:, N_GENRES + 4] = torch.where(
            series >= 0, (torch.arange(N_TITLES) % 5 + 1) / 100, 0
        )
        trained = torch.ones(N_TITLES, dtype=torch.bool)
        model.set_title_metadata(features, age, trained, series)
    return model


def test_save_pretrained_round_trip_gives_identical_scores(tmp_path: Path) -> None:
    model = make_model(mtp_n=2, genre_weight=0.3).eval()
    model.save_pretrained(tmp_path)
    assert {"config.json", "model.safetensors"} <= {p.name for p in tmp_path.iterdir()}
    loaded = FoundationModel.from_pretrained(tmp_path).eval()
    assert loaded.config.model_type == "reelfm-foundation"
    history = random_batch(torch.Generator().manual_seed(1), [10, 4, 16], 16, targets=False)
    ids, scores = model.recommend(history, k=10)
    loaded_ids, loaded_scores = loaded.recommend(history, k=10)
    assert torch.equal(ids, loaded_ids)
    assert torch.equal(scores, loaded_scores)


def test_forward_reports_every_enabled_objective_and_one_step_changes_weights() -> None:
    model = make_model(mtp_n=2, genre_weight=0.3, dropout=0.1).train()
    batch = random_batch(torch.Generator().manual_seed(2), [16, 12, 9, 16], 16)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    output = model(batch)
    assert set(output.metrics()) == {"loss", "next_title_loss", "mtp_loss", "genre_loss"}
    expected = (
        output.next_title_loss + model.config.mtp_weight * output.mtp_loss + 0.3 * output.genre_loss
    )
    torch.testing.assert_close(output.loss, expected)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    output.loss.backward()
    optimizer.step()
    # The metadata projection's output layer starts at zero, so the layer before it first gets
    # a gradient on the second step.
    optimizer.zero_grad()
    model(batch).loss.backward()
    optimizer.step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    # Every parameter took part in the loss, so every one moved.
    assert changed == set(before)


def test_a_fresh_model_starts_as_its_sasrec_ablation() -> None:
    model = make_model(mtp_n=0, genre_weight=0.0).eval()
    batch = random_batch(torch.Generator().manual_seed(4), [16, 5], 16)
    shuffled = SequenceBatch(
        batch.titles, batch.actions.flip(1), batch.watch_fraction.flip(1), batch.gaps.flip(1),
        batch.devices.flip(1), batch.hours.flip(1), batch.weekdays.flip(1), batch.targets,
    )  # fmt: skip
    # Token features and metadata start as no-ops; trained titles lean on their id embedding.
    torch.testing.assert_close(model(batch).loss, model(shuffled).loss)
    gate = model.config.id_gate_init
    torch.testing.assert_close(model.title_embeddings(), gate * model.title_id_embedding.weight)


def test_sasrec_ablation_is_the_same_model_with_features_off() -> None:
    model = make_model(use_token_features=False, use_metadata=False, mtp_n=0, genre_weight=0.0)
    names = {name for name, _ in model.named_parameters()}
    assert not any(
        n.startswith(("feature_embeddings", "metadata_proj", "gate_", "freshness", "mtp_"))
        for n in names
    )
    batch = random_batch(torch.Generator().manual_seed(3), [16, 5], 16)
    shuffled = SequenceBatch(
        batch.titles, batch.actions.flip(1), batch.watch_fraction, batch.gaps.flip(1),
        batch.devices, batch.hours.flip(1), batch.weekdays, batch.targets,
    )  # fmt: skip
    model.eval()
    # Token features are ignored entirely when switched off.
    torch.testing.assert_close(model(batch).loss, model(shuffled).loss)


def test_sampled_softmax_with_log_q_approximates_the_full_softmax() -> None:
    full = make_model(num_sampled_negatives=0).train()
    sampled = make_model(num_sampled_negatives=2000).train()
    sampled.load_state_dict(full.state_dict())
    batch = random_batch(torch.Generator().manual_seed(4), [16, 16, 16, 16], 16)
    full_loss = full(batch).next_title_loss.detach()
    torch.manual_seed(0)
    sampled_loss = sampled(batch).next_title_loss.detach()
    # 2000 draws from a 40-title uniform proposal cover the catalogue ~50 times: the corrected
    # estimate must sit within a few percent of the exact loss (accidental hits are masked).
    assert abs(float(sampled_loss) - float(full_loss)) < 0.05 * float(full_loss)
    # A popularity proposal must be corrected for too: a skewed q gives the same estimate.
    sampled.set_title_popularity(torch.arange(N_TITLES, dtype=torch.float32) ** 2)
    skewed_loss = sampled(batch).next_title_loss.detach()
    assert abs(float(skewed_loss) - float(full_loss)) < 0.05 * float(full_loss)


def test_full_softmax_loss_in_row_chunks_equals_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every term of the logits rides along with its rows: freshness at each target's time, the
    # continue-watching bonus, the title bias and the titles left out of each row's softmax.
    model = make_model(title_bias=True, train_servable_only=True, cold_freshness=True).train()
    batch = random_batch(torch.Generator().manual_seed(9), [16, 16, 11], 16)
    results = []
    for elements in (10**9, 3 * N_TITLES):  # one block; 3 rows a chunk (40 targets: 14 chunks)
        monkeypatch.setattr(foundation_module, "LOSS_CHUNK_ELEMENTS", elements)
        model.zero_grad()
        torch.manual_seed(1)  # the same titles hidden by id dropout in both
        loss = model(batch).next_title_loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                        if p.grad is not None}))  # fmt: skip
    (whole, whole_grads), (chunked, chunked_grads) = results
    assert torch.allclose(whole, chunked, atol=1e-6)
    assert whole_grads.keys() == chunked_grads.keys()
    assert {"freshness_bias", "continuation_bias", "title_id_bias"} <= whole_grads.keys()
    for name, grad in whole_grads.items():
        assert torch.allclose(grad, chunked_grads[name], atol=1e-6), name


def test_label_smoothing_spreads_mass_over_the_titles_a_row_scores() -> None:
    logits = torch.tensor([[2.0, 0.0, float("-inf"), -1.0], [0.5, 0.5, 0.5, 0.5]])
    target = torch.tensor([0, 3])
    plain = foundation_module.smoothed_cross_entropy(logits, target)
    assert torch.allclose(plain, F.cross_entropy(logits, target, reduction="none"))
    log_p = torch.log_softmax(logits, dim=1)
    # Row 0 scores three titles: the blocked one gets no mass (F.cross_entropy's would be inf).
    expected = 0.9 * plain + 0.1 * torch.stack([-log_p[0, [0, 1, 3]].mean(), -log_p[1].mean()])
    scored = torch.isfinite(logits)
    smoothed = foundation_module.smoothed_cross_entropy(logits, target, 0.1, scored)
    assert torch.allclose(smoothed, expected)
    every_title = foundation_module.smoothed_cross_entropy(logits[1:], target[1:], 0.1)
    assert torch.allclose(every_title, expected[1:])  # no title blocked: the plain mean

    # In the model the loss is linear in the smoothing, with blocked titles (train_servable_only)
    # and id dropout drawn alike in each run.
    batch = random_batch(torch.Generator().manual_seed(9), [16, 16, 11], 16)
    losses = []
    for smoothing in (0.0, 0.1, 0.2):
        model = make_model(seed=2, train_servable_only=True, label_smoothing=smoothing).train()
        with torch.no_grad():
            model.final_norm.weight.mul_(30.0)  # logits far from uniform, as after training
        torch.manual_seed(1)
        losses.append(model(batch).next_title_loss)
    assert torch.isfinite(torch.stack(losses)).all()
    assert not torch.allclose(losses[0], losses[1], atol=1e-3)
    assert torch.allclose(losses[2] - losses[0], 2 * (losses[1] - losses[0]), atol=1e-5)
    # Off unless asked for (it cost the synthetic recipe cold-start recall). A sampled softmax
    # scores a few titles, not the catalogue: asking for both is an error rather than a
    # silently different objective.
    assert make_model().config.label_smoothing == 0.0
    assert make_model(num_sampled_negatives=8).config.label_smoothing == 0.0
    with pytest.raises(ValueError, match="full softmax"):
        make_model(num_sampled_negatives=8, label_smoothing=0.1)


def test_eval_mode_scores_the_full_catalogue_and_reports_hit_rates() -> None:
    model = make_model(num_sampled_negatives=8).eval()
    batch = random_batch(torch.Generator().manual_seed(5), [16, 7], 16)
    metrics = model(batch).metrics()
    assert 0.0 <= metrics["hit_at_1"] <= metrics["hit_at_10"] <= 1.0


def test_recommend_uses_the_latest_window_and_excludes_seen_titles() -> None:
    # The series rules read the whole history (an episode watched before the window still
    # moves the member on); without them only the window counts.
    model = make_model(next_episode_only=False, continuation_bonus=False).eval()
    g = torch.Generator().manual_seed(6)
    long = random_batch(g, [40, 23], 40, targets=False)
    ids, scores = model.recommend(long, k=5)
    assert ids.shape == scores.shape == (2, 5)
    assert torch.all(scores[:, :-1] >= scores[:, 1:])
    for row in range(2):
        seen = set(long.titles[row][long.mask[row]].tolist())
        assert not seen & set(ids[row].tolist())
    # Only the newest max_len tokens matter for the scores.
    window_ids, window_scores = model.recommend(long.latest(model.config.max_len), k=40,
                                                exclude_seen=False)  # fmt: skip
    all_ids, all_scores = model.recommend(long, k=40, exclude_seen=False)
    assert torch.equal(window_ids, all_ids)
    torch.testing.assert_close(window_scores, all_scores)


def prefix_of(events: SequenceBatch, lengths: torch.Tensor) -> SequenceBatch:
    """Each row of ``events`` cut to its first ``lengths[b]`` tokens (still right-padded)."""
    real = torch.arange(events.titles.shape[1])[None, :] < lengths[:, None]  # (B, T)
    return SequenceBatch(
        titles=torch.where(real, events.titles, PAD_INDEX),
        **{name: getattr(events, name) * real for name in FEATURES},
    )


def token_at(events: SequenceBatch, index: torch.Tensor) -> SequenceBatch:
    """(B, 1): each row's token at ``index[b]``."""
    return SequenceBatch(
        titles=events.titles.gather(1, index[:, None]),
        **{name: getattr(events, name).gather(1, index[:, None]) for name in FEATURES},
    )


FEATURES = ("actions", "watch_fraction", "gaps", "devices", "hours", "weekdays", "times")


@pytest.mark.parametrize("history_metadata", [True, False])
def test_history_tokens_read_their_titles_genres_whatever_the_gate(history_metadata: bool) -> None:
    """With ``history_metadata`` the member's state sees the genres of what they watched even
    where the gate gives a title's embedding wholly to its id; without it, it does not."""
    model = make_model(history_metadata=history_metadata).eval()
    history = random_batch(torch.Generator().manual_seed(3), [8, 5], 8, targets=False)
    with torch.no_grad():
        model.gate_bias.fill_(30.0)  # gate = 1: every trained title is its id embedding alone
        before = model.hidden_states(history)
        genres = model.title_features[:, :N_GENRES]
        model.title_features[:, :N_GENRES] = 1.0 - genres  # every title's other genres
        after = model.hidden_states(history)
    assert (not torch.allclose(before, after)) == history_metadata


@pytest.mark.parametrize(
    "overrides", [{"mtp_n": 1}, {"title_bias": True, "cold_freshness": True}], ids=str
)
def test_kv_cache_steps_match_uncached_scores(overrides: dict) -> None:
    model = make_model(**overrides).eval()
    with torch.no_grad():  # as if trained: fresher titles score differently
        model.freshness_bias.copy_(torch.linspace(-3.0, 2.0, model.config.freshness_buckets))
        if model.config.title_bias:  # and popular titles, and untrained ones by their metadata
            model.title_id_bias.normal_(std=0.3)
            model.metadata_bias.weight.normal_(std=0.3)
            model.cold_freshness_bias.copy_(torch.linspace(2.0, -1.0, 8))
            model.title_trained[::3] = False
    events = random_batch(torch.Generator().manual_seed(7), [30, 30, 30], 30, targets=False)
    # Rows start at different lengths, so they fill the 16-token window at different steps.
    lengths = torch.tensor([3, 9, 14])
    cache = model.init_cache(prefix_of(events, lengths))
    for _ in range(14):  # past max_len for every row: exercises the sliding window too
        cache = model.step(cache, token_at(events, lengths))
        lengths = lengths + 1
        history = prefix_of(events, lengths)
        _, cached_scores = model.recommend_cached(cache, k=N_TITLES, exclude_seen=False)
        _, scores = model.recommend(history, k=N_TITLES, exclude_seen=False)
        torch.testing.assert_close(cached_scores, scores, atol=1e-5, rtol=0)
        cached_ids, _ = model.recommend_cached(cache, k=5)
        ids, _ = model.recommend(history, k=5)
        assert torch.equal(cached_ids, ids)
        # An explicit request time (a day after the newest token) moves both alike.
        later = history.last_times + DAY
        _, cached_later = model.recommend_cached(cache, N_TITLES, False, request_times=later)
        _, later_scores = model.recommend(history, N_TITLES, False, request_times=later)
        torch.testing.assert_close(cached_later, later_scores, atol=1e-5, rtol=0)
        assert not torch.allclose(later_scores, scores)


def test_appended_title_gets_a_metadata_only_embedding_and_survives_save(tmp_path: Path) -> None:
    model = make_model().eval()
    with torch.no_grad():  # as training leaves it: a fresh metadata projection outputs zeros
        model.metadata_proj[-1].weight.normal_(std=0.02)
    old = model.title_embeddings().detach().clone()
    features = torch.cat([model.title_features, torch.ones(2, model.config.metadata_dim)])
    age = torch.cat([model.title_age_days, torch.zeros(2)])
    trained = torch.cat([model.title_trained, torch.zeros(2, dtype=torch.bool)])
    model.set_title_metadata(features, age, trained)
    assert model.num_titles == model.config.num_titles == N_TITLES + 2
    embeddings = model.title_embeddings().detach()
    torch.testing.assert_close(embeddings[:N_TITLES], old)
    torch.testing.assert_close(embeddings[N_TITLES:], model.metadata_proj(features[N_TITLES:]))
    assert embeddings[N_TITLES].norm() > 0
    model.save_pretrained(tmp_path)
    loaded = FoundationModel.from_pretrained(tmp_path).eval()
    assert loaded.num_titles == N_TITLES + 2
    torch.testing.assert_close(loaded.title_embeddings(), embeddings)


def test_metadata_is_required_when_enabled_and_never_shrinks() -> None:
    torch.manual_seed(0)
    model = FoundationModel(
        FoundationConfig.from_preset("tiny", num_titles=N_TITLES, num_genres=N_GENRES)
    )
    batch = random_batch(torch.Generator().manual_seed(8), [4], 4)
    with pytest.raises(RuntimeError, match="set_title_metadata"):
        model(batch)
    with pytest.raises(ValueError, match="append-only"):
        model.set_title_metadata(
            torch.zeros(N_TITLES - 1, model.config.metadata_dim),
            torch.zeros(N_TITLES - 1),
            torch.ones(N_TITLES - 1, dtype=torch.bool),
        )


def test_inference_refuses_training_mode_and_empty_histories() -> None:
    model = make_model()
    history = random_batch(torch.Generator().manual_seed(9), [4, 0], 4, targets=False)
    with pytest.raises(RuntimeError, match="eval"):
        model.train().recommend(random_batch(torch.Generator(), [4], 4, targets=False), k=3)
    with pytest.raises(ValueError, match="at least one token"):
        model.eval().recommend(history, k=3)


def test_title_bias_is_the_ids_for_trained_titles_and_the_metadatas_for_new_ones() -> None:
    model = make_model(title_bias=True, cold_freshness=True).eval()
    with torch.no_grad():
        model.title_id_bias.normal_(std=0.3)
        model.metadata_bias.weight.normal_(std=0.3)
        model.metadata_bias.bias.fill_(0.05)
        model.cold_freshness_bias.copy_(torch.linspace(2.0, -1.0, 8))
    model.title_trained[:5] = False  # five titles as if released after training
    bias = model.title_bias()
    gate = torch.sigmoid(model.gate_bias + model.gate_slope * torch.log1p(model.title_age_days))
    meta = 10.0 * model.metadata_bias(model.metadata_proj[:-1](model.title_features))[:, 0]
    torch.testing.assert_close(bias[:5], meta[:5])
    torch.testing.assert_close(
        bias[5:], (gate * 10.0 * model.title_id_bias + (1 - gate) * meta)[5:]
    )
    # The untrained titles read the cold freshness table, the others the shared one.
    request = torch.tensor([NOW_TS])
    fresh, young = model.freshness(request, torch.arange(N_TITLES))
    cold_fresh, _ = model.freshness(request, torch.arange(N_TITLES), model.title_trained & False)
    assert young.tolist() == list(range(N_TITLES))
    torch.testing.assert_close(fresh[0, :5], cold_fresh[0, :5])
    recent = model.title_age_days[5:] < 127  # titles with a freshness bucket at all
    assert not torch.allclose(fresh[0, 5:][recent], cold_fresh[0, 5:][recent])


def test_metadata_loss_is_reported_and_trains_the_metadata_path_without_id_dropout() -> None:
    model = make_model(metadata_loss_weight=0.5, cold_title_rate=0.0).train()
    batch = random_batch(torch.Generator().manual_seed(3), [12, 9], 12)
    out = model(batch)
    assert "metadata_loss" in out.metrics()
    torch.testing.assert_close(out.loss, out.next_title_loss + 0.5 * out.metadata_loss)
    out.loss.backward()
    # Every title is trained and none is dropped, yet the metadata projection learns.
    assert model.metadata_proj[-1].weight.grad.abs().sum() > 0
    assert "metadata_loss" not in make_model()(batch).metrics()


def test_targets_already_in_the_window_are_not_trained_on() -> None:
    # Row 0: 3 5 3 7 5; its targets 5 3 7 5: the 3 at t=1 and the 5 at t=3 are repeats. Row 1 is
    # all repeats of one title: a batch of repeats alone would keep them, this one does not.
    batch = random_batch(torch.Generator().manual_seed(3), [5, 4], 6)
    titles = torch.tensor([[3, 5, 3, 7, 5, PAD_INDEX], [9, 9, 9, 9, PAD_INDEX, PAD_INDEX]])
    targets = torch.tensor([[5, 3, 7, 5, PAD_INDEX, PAD_INDEX], [9, 9, 9] + [PAD_INDEX] * 3])
    batch = replace(batch, titles=titles, targets=targets)
    repeated = foundation_module.repeated_targets(batch.titles, batch.mask, batch.targets)
    assert repeated[0].tolist() == [False, True, False, True, False, False]
    assert repeated[1, :3].all()

    # Skipping them is training on the batch with those targets removed, loss and gradients.
    skipping = make_model(seed=4).eval()
    assert skipping.config.skip_repeat_targets  # on for every model built from a preset
    plain = make_model(seed=4, skip_repeat_targets=False).eval()
    removed = replace(batch, targets=torch.where(repeated, PAD_INDEX, batch.targets))
    assert torch.allclose(skipping(batch).loss, plain(removed).loss, atol=1e-6)
    assert not torch.allclose(plain(batch).loss, plain(removed).loss, atol=1e-3)

    only_repeats = replace(batch, targets=torch.where(repeated, batch.targets, PAD_INDEX))
    assert torch.allclose(skipping(only_repeats).loss, plain(only_repeats).loss, atol=1e-6)


def test_drop_keys_hides_each_earlier_key_at_the_rate_and_never_a_tokens_own() -> None:
    torch.manual_seed(0)
    T = 40
    mask = foundation_module.dropped_keys_mask(64, 2, T, 0.25, torch.device("cpu"))
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    earlier = causal & ~torch.eye(T, dtype=torch.bool)
    assert mask.shape == (64, 2, T, T)
    assert not (mask & ~causal).any()  # never a later key
    assert mask.diagonal(dim1=-2, dim2=-1).all()  # always the token itself: no empty softmax
    hidden = (~mask[:, :, earlier]).float().mean().item()  # 99,840 earlier (query, key) pairs
    assert abs(hidden - 0.25) < 0.01
    assert (mask[:, 0] != mask[:, 1]).any()  # heads draw their own keys


def test_drop_keys_renormalises_over_the_kept_keys_in_training_only() -> None:
    # Attention dropout at 0.5 as hidden keys; every other dropout of the tiny preset is 0.
    config = FoundationConfig.from_preset(
        "tiny", num_titles=N_TITLES, num_genres=N_GENRES, drop_keys=True, attention_dropout=0.5
    )
    torch.manual_seed(5)
    attention = foundation_module.CausalSelfAttention(config)
    x = torch.randn(3, 10, config.d_model)
    evaluated = attention.eval()(x)[0]
    torch.manual_seed(1)
    trained = attention.train()(x)[0]

    # By hand: softmax over the keys the mask kept, no rescaling, then the output projection.
    torch.manual_seed(1)
    mask = foundation_module.dropped_keys_mask(3, config.n_heads, 10, 0.5, torch.device("cpu"))
    q, k, v = (
        part.view(3, 10, config.n_heads, config.head_dim).transpose(1, 2)
        for part in attention.qkv(x).split(config.d_model, dim=2)
    )
    scores = (q @ k.transpose(-1, -2) / config.head_dim**0.5).masked_fill(~mask, float("-inf"))
    by_hand = attention.proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(3, 10, -1))
    torch.testing.assert_close(trained, by_hand, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(trained, evaluated, atol=1e-3)  # keys were hidden in training
    torch.testing.assert_close(trained[:, 0], evaluated[:, 0])  # the first token sees only itself
