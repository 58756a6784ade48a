"""The shared loop: learns a learnable pattern, resumes exactly, stops early, schedules the LR."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.models import FoundationConfig, FoundationModel, pretraining_loss
from pipelines.models.windows import (
    LastTokenDataset,
    UserSequences,
    WindowDataset,
    collate_windows,
    split_last_token,
)
from pipelines.training import TRAIN_PRESETS, TrainConfig, latest_checkpoint, train
from pipelines.training.loop import DistributedContext, epoch_batches, evaluate, lr_factor

N_TITLES = 20


def cyclic_sequences(n_users: int, length: int, seed: int = 0) -> UserSequences:
    """Histories where the next title is (previous + 1) mod N_TITLES, random start and features."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, N_TITLES, n_users)
    titles = (starts[:, None] + np.arange(length)[None, :]) % N_TITLES  # (U, L)
    features = [rng.integers(0, high, (n_users, length)) for high in (8, 6, 16, 6, 24, 7)]
    tokens = np.stack([titles, *features]).reshape(7, -1).astype(np.int64)  # (7, U * L)
    offsets = np.arange(n_users + 1, dtype=np.int64) * length
    return UserSequences([f"u{i}" for i in range(n_users)], offsets, tokens)


def make_model(seed: int = 0, **overrides: object) -> FoundationModel:
    torch.manual_seed(seed)
    config = FoundationConfig.from_preset("tiny", num_titles=N_TITLES, num_genres=3, **overrides)
    model = FoundationModel(config)
    g = torch.Generator().manual_seed(seed)
    model.set_title_metadata(
        (torch.rand(N_TITLES, config.metadata_dim, generator=g) > 0.5).float(),
        torch.rand(N_TITLES, generator=g) * 1000,
        torch.ones(N_TITLES, dtype=torch.bool),
    )
    return model


def test_loss_falls_and_the_cyclic_pattern_is_learnt() -> None:
    train_seqs, validation = split_last_token(cyclic_sequences(64, 33))
    model = make_model()
    windows = WindowDataset(train_seqs, model.config.max_len, model.config.window_stride)
    logged: list[tuple[dict[str, float], int]] = []
    result = train(
        model,
        pretraining_loss,
        windows,
        replace(TRAIN_PRESETS["tiny"], max_steps=80, eval_every=40),
        collate_windows,
        val_data=LastTokenDataset(validation, model.config.max_len),
        log_metrics=lambda metrics, step: logged.append((metrics, step)),
    )
    losses = [m["train/loss"] for m, _ in logged if "train/loss" in m]
    assert result.steps == 80 and len(losses) == 80
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    val = [m for m, _ in logged if "val/hit_at_1" in m]
    assert len(val) == 2  # eval_every=40 over 80 steps
    assert val[-1]["val/hit_at_1"] > 0.9
    assert {"train/lr", "train/grad_norm"} <= set(logged[0][0])


class Killed(Exception):
    """Stands in for the process dying mid-run."""


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_a_killed_run_resumes_to_the_same_weights(tmp_path: Path, ema_decay: float) -> None:
    # Dropout and sampled negatives draw random numbers every step: resuming must restore RNGs;
    # with a weight average the average must resume too (the run returns the average).
    overrides = {"dropout": 0.1, "num_sampled_negatives": 8, "mtp_n": 1}
    train_seqs, validation = split_last_token(cyclic_sequences(48, 25))
    config = replace(
        TRAIN_PRESETS["tiny"], max_steps=12, batch_size=8, checkpoint_every=3, eval_every=4,
        early_stopping_patience=5, restore_best=False, ema_decay=ema_decay,
    )  # fmt: skip

    def run(model: FoundationModel, directory: Path, kill_at: int | None = None) -> None:
        def log(metrics: dict[str, float], step: int) -> None:
            if kill_at is not None and step == kill_at:
                raise Killed

        windows = WindowDataset(train_seqs, model.config.max_len, model.config.window_stride)
        val = LastTokenDataset(validation, model.config.max_len)
        train(model, pretraining_loss, windows, config, collate_windows, val, directory, log)

    straight = make_model(**overrides)
    run(straight, tmp_path / "straight")

    interrupted = make_model(**overrides)
    with pytest.raises(Killed):
        run(interrupted, tmp_path / "resumed", kill_at=8)  # last checkpoint: step 6, mid-epoch
    assert latest_checkpoint(tmp_path / "resumed").name == "step-00000006"
    resumed = make_model(seed=123, **overrides)  # different init: the checkpoint must win
    run(resumed, tmp_path / "resumed")

    for (name, a), (_, b) in zip(
        straight.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), name


def test_the_run_returns_the_weight_average_of_its_steps() -> None:
    train_seqs, _ = split_last_token(cyclic_sequences(32, 17))
    model = make_model()
    initial = {k: v.detach().clone() for k, v in model.named_parameters()}
    windows = WindowDataset(train_seqs, model.config.max_len, model.config.window_stride)
    raw: list[dict[str, torch.Tensor]] = []  # the optimizer's weights after each step

    def snapshot(metrics: dict[str, float], step: int) -> None:
        raw.append({k: v.detach().clone() for k, v in model.named_parameters()})

    config = replace(TRAIN_PRESETS["tiny"], max_steps=20, batch_size=8, ema_decay=0.8)
    train(model, pretraining_loss, windows, config, collate_windows, log_metrics=snapshot)
    assert len(raw) == 20
    for name, returned in model.named_parameters():
        expected = initial[name]
        for step, weights in enumerate(raw):
            decay = min(0.8, (1 + step) / (10 + step))
            expected = decay * expected + (1 - decay) * weights[name]
        assert torch.allclose(returned, expected, atol=1e-6), name
    moved = [n for n, p in model.named_parameters() if not torch.allclose(p, raw[-1][n])]
    assert moved  # the average is not the last step's weights


def test_early_stopping_stops_when_patience_runs_out() -> None:
    train_seqs, validation = split_last_token(cyclic_sequences(32, 17))
    model = make_model()
    windows = WindowDataset(train_seqs, model.config.max_len, model.config.window_stride)
    seen: list[float] = []
    # lr=0 after warm-up cannot improve, so patience 2 stops at the third validation.
    config = TrainConfig(
        lr=1e-9, warmup_steps=1, max_steps=50, batch_size=8, eval_every=2,
        early_stopping_patience=2, early_stopping_metric="hit_at_10",
        early_stopping_mode="max", progress=False,
    )  # fmt: skip
    result = train(
        model, pretraining_loss, windows, config, collate_windows,
        val_data=LastTokenDataset(validation, model.config.max_len),
        log_metrics=lambda m, s: seen.append(s) if "val/loss" in m else None,
    )  # fmt: skip
    assert result.stopped_early
    assert result.steps == 6 and seen == [2, 4, 6]
    assert result.best_step == 2


def test_a_cpu_time_cap_ends_the_run_with_its_best_validated_weights() -> None:
    train_seqs, validation = split_last_token(cyclic_sequences(32, 17))
    windows = WindowDataset(train_seqs, 16, 8)
    val_data = LastTokenDataset(validation, 16)

    def dear_loss(model, batch):  # each step burns 0.1 s of this process's CPU
        started = time.process_time()
        while time.process_time() - started < 0.1:
            pass
        return pretraining_loss(model, batch)

    config = TrainConfig(
        lr=1e-3, warmup_steps=1, max_steps=1000, batch_size=8, eval_every=2,
        early_stopping_patience=1000, early_stopping_metric="hit_at_10",
        early_stopping_mode="max", max_cpu_seconds=1.0, progress=False,
    )  # fmt: skip
    model = make_model()
    result = train(model, dear_loss, windows, config, collate_windows, val_data=val_data)
    assert result.out_of_cpu and not result.stopped_early
    assert result.steps <= 10  # of 1,000 planned: each step burns 0.1 s, the cap is 1.0 s
    # The run ends as any run does: validated, with its best weights restored.
    best = evaluate(model, pretraining_loss, val_data, collate_windows, config)
    assert best["hit_at_10"] == pytest.approx(result.best_metric)

    # A cap the run does not reach changes nothing: the same steps and weights as no cap.
    short = replace(config, max_steps=4, max_cpu_seconds=None)
    capped, plain = make_model(), make_model()
    free = train(capped, pretraining_loss, windows, replace(short, max_cpu_seconds=1e6),
                 collate_windows, val_data=val_data)  # fmt: skip
    train(plain, pretraining_loss, windows, short, collate_windows, val_data=val_data)
    assert free.steps == 4 and not free.out_of_cpu
    for a, b in zip(capped.parameters(), plain.parameters(), strict=True):
        assert torch.equal(a, b)


def test_warmup_then_cosine_schedule() -> None:
    assert lr_factor(0, 10, 110, 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 10, 110, 0.1) == pytest.approx(1.0)
    assert lr_factor(60, 10, 110, 0.1) == pytest.approx(0.55)
    assert lr_factor(110, 10, 110, 0.1) == pytest.approx(0.1)


def test_config_errors_say_what_to_change() -> None:
    with pytest.raises(ValueError, match="max_steps or max_epochs"):
        TrainConfig(max_steps=None, max_epochs=None)
    with pytest.raises(ValueError, match="max_cpu_seconds must be > 0"):
        TrainConfig(max_cpu_seconds=0)
    train_seqs, _ = split_last_token(cyclic_sequences(2, 5))
    model = make_model()
    windows = WindowDataset(train_seqs, model.config.max_len, model.config.window_stride)
    with pytest.raises(ValueError, match="lower batch_size"):
        train(model, pretraining_loss, windows, TrainConfig(batch_size=64), collate_windows)


def varied_sequences(n_users: int, seed: int = 0) -> UserSequences:
    """Cyclic histories of 2..40 tokens, most of them short (as members' histories are)."""
    rng = np.random.default_rng(seed)
    lengths = np.minimum(2 + rng.geometric(0.12, n_users), 40)
    whole = cyclic_sequences(n_users, 40, seed)
    keep = np.concatenate([np.arange(40 * u, 40 * u + n) for u, n in enumerate(lengths)])
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    return UserSequences(whole.user_ids, offsets, whole.tokens[:, keep])


def grouped_batches(
    windows: WindowDataset, epoch: int = 0, rank: int = 0, world_size: int = 1
) -> list[list[int]]:
    """Batches of 16 windows' worth of tokens, grouped 8 batches at a time, seed 3."""
    config = TrainConfig(batch_size=16, length_grouping=8, seed=3)
    ctx = DistributedContext(rank, world_size, torch.device("cpu"), owns_group=False)
    return epoch_batches(windows, config, epoch, ctx)


def test_length_grouping_batches_like_lengths_and_covers_the_epoch_once() -> None:
    windows = WindowDataset(varied_sequences(300), 16, 8)
    lengths = windows.lengths
    assert [windows[i].tokens.shape[1] for i in range(len(windows))] == lengths.tolist()
    batches = grouped_batches(windows)
    assert sorted(i for b in batches for i in b) == list(range(len(windows)))  # each once
    # No batch holds more tokens than a random batch of 16 does on average (one window may)
    assert all(lengths[b].sum() <= 16 * lengths.mean() or len(b) == 1 for b in batches)
    padded = sum(len(b) * lengths[b].max() for b in batches)
    random_order = np.random.default_rng(0).permutation(len(windows))
    random_batches = np.array_split(random_order, len(windows) // 16)  # batches of 16
    random_padded = sum(len(b) * lengths[b].max() for b in random_batches)
    assert lengths.sum() / padded > 0.85 > 0.7 > lengths.sum() / random_padded
    # The order replays from (seed, epoch) and changes with the epoch
    assert grouped_batches(windows) == batches
    assert grouped_batches(windows, epoch=1) != batches
    # Two ranks split each global batch; together they are the one-process batch
    ranks = [grouped_batches(windows, rank=r, world_size=2) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(batches)
    for a, b, whole in zip(*ranks, batches, strict=True):
        assert sorted(a + b) == sorted(whole) and len(a) - len(b) in (0, 1) and b


def test_a_length_grouped_run_learns_and_resumes_exactly(tmp_path: Path) -> None:
    train_seqs, validation = split_last_token(varied_sequences(200))
    config = replace(
        TRAIN_PRESETS["tiny"], max_steps=40, batch_size=16, length_grouping=4,
        checkpoint_every=10, eval_every=20,
    )  # fmt: skip

    def run(model: FoundationModel, directory: Path, kill_at: int | None = None) -> list[float]:
        losses: list[float] = []

        def log(metrics: dict[str, float], step: int) -> None:
            if kill_at is not None and step == kill_at:
                raise Killed
            if "train/loss" in metrics:
                losses.append(metrics["train/loss"])

        windows = WindowDataset(train_seqs, model.config.max_len, model.config.window_stride)
        val = LastTokenDataset(validation, model.config.max_len)
        train(model, pretraining_loss, windows, config, collate_windows, val, directory, log)
        return losses

    straight = make_model(dropout=0.1)
    losses = run(straight, tmp_path / "straight")
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])  # from ln(20) = 3.0
    interrupted = make_model(dropout=0.1)
    with pytest.raises(Killed):
        run(interrupted, tmp_path / "resumed", kill_at=25)
    resumed = make_model(seed=5, dropout=0.1)
    run(resumed, tmp_path / "resumed")
    for (name, a), (_, b) in zip(
        straight.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), name
    # A dataset without lengths cannot be grouped, and says so
    with pytest.raises(ValueError, match="no `lengths`"):
        train(make_model(), pretraining_loss, LastTokenDataset(train_seqs, 16), config,
              collate_windows)  # fmt: skip
