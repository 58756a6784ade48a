"""The one training loop every reelfm recipe shares: pretraining, SFT, DPO, distillation.

A recipe passes a model, a loss callable ``loss_fn(model, batch) -> (loss, metrics)``, datasets
with a collate function and a frozen ``TrainConfig``; the loop owns everything else: AdamW with
warm-up + cosine LR, gradient clipping, bf16 autocast on CUDA, seeds, the data order, periodic
validation with early stopping, checkpoints that resume exactly (``pipelines.training.checkpoint``)
and per-step metrics through an optional ``log_metrics(metrics, step)`` callback (MLflow plugs in
there). Under ``torchrun`` (``WORLD_SIZE`` > 1) the same code runs data-parallel: it joins the
process group, wraps the model in DDP and gives each rank its share of every global batch.

The loop builds its own data loaders from datasets because exact resumption needs to own the
order: each epoch's order is a function of (seed, epoch) alone, and a resumed run skips the
batches it has already consumed without loading them.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from pipelines.training.averaging import WeightAverage
from pipelines.training.checkpoint import (
    TrainerState,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)


class Batch(Protocol):
    """What the loop needs of a batch: a row count and a device move (e.g. ``SequenceBatch``)."""

    def __len__(self) -> int: ...

    def to(self, device: torch.device | str) -> Batch: ...


LossFn = Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]
"""``loss_fn(model, batch) -> (scalar loss to minimise, metrics to log)``; call ``model(...)``."""
MetricsLogger = Callable[[dict[str, float], int], None]
"""``log_metrics(metrics, step)``; called on rank 0 only."""


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, schedule and bookkeeping of one run; model shape lives in the model config."""

    lr: float = 1e-3  # peak learning rate, reached after warm-up
    weight_decay: float = 0.01  # AdamW decay on matrices (not on biases, norms or scalars)
    betas: tuple[float, float] = (0.9, 0.98)  # AdamW moment decays
    warmup_steps: int = 50  # linear warm-up from 0 to lr
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at the last step
    max_steps: int | None = None  # optimizer steps; None: max_epochs full epochs
    max_epochs: int | None = 1  # used when max_steps is None
    # A CPU-time cap in seconds (time.process_time: this process, all threads): the run ends
    # after the step that reaches it, wherever the schedule is, and then validates and restores
    # the best weights as at any end. For benchmarks that give each model the same CPU minutes
    # on a shared machine, where a step's cost moves with the load; where such a run stops
    # depends on the machine, so a resumed run need not stop where an unbroken one would. One
    # process only (DDP ranks would stop at different steps). None: no cap.
    max_cpu_seconds: float | None = None
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    batch_size: int = 64  # GLOBAL batch size: divided evenly over DDP ranks
    seed: int = 0  # seeds the data order and, per rank, every RNG (dropout, sampling)
    eval_every: int = 0  # validate every this many steps; 0: at the end of each epoch
    early_stopping_metric: str = "loss"  # validation metric (a key of loss_fn's metrics)
    early_stopping_mode: Literal["min", "max"] = "min"  # whether lower or higher is better
    early_stopping_patience: int = 0  # stop after this many validations without improvement; 0 off
    restore_best: bool = True  # with early stopping on, end with the best validated weights
    # Exponential moving average of the weights (0: off). When set, validation, the best
    # weights and the returned model are the average; the optimizer steps the raw weights.
    ema_decay: float = 0.0
    checkpoint_every: int = 0  # write a checkpoint every this many steps; 0: only at the end
    keep_checkpoints: int = 2  # newest checkpoints kept on disk
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU, where it would only slow down)
    num_workers: int = 0  # DataLoader worker processes
    # Batches of like-length examples (0: off; needs ``train_data.lengths``). The shuffled
    # examples are taken this many batches' worth at a time, sorted by length and cut into
    # batches of at most batch_size x (mean example length) tokens: a step holds about as
    # many tokens as a random batch, with few pads where lengths vary (the demo's windows:
    # 17 % of a random batch's positions are real tokens).
    length_grouping: int = 0
    progress: bool = True  # show a tqdm bar on rank 0

    def __post_init__(self) -> None:
        if self.max_steps is None and self.max_epochs is None:
            raise ValueError("set max_steps or max_epochs")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.max_cpu_seconds is not None and self.max_cpu_seconds <= 0:
            raise ValueError(f"max_cpu_seconds must be > 0, got {self.max_cpu_seconds}")
        if self.length_grouping < 0:
            raise ValueError(f"length_grouping must be >= 0, got {self.length_grouping}")
        if self.early_stopping_mode not in ("min", "max"):
            raise ValueError(
                f"early_stopping_mode must be min or max, got {self.early_stopping_mode}"
            )


TRAIN_PRESETS: dict[str, TrainConfig] = {
    "tiny": TrainConfig(lr=3e-3, warmup_steps=5, max_steps=60, batch_size=16, progress=False),
    "demo": TrainConfig(
        lr=2e-3,
        # 30 steps (a tenth of the run) validated +0.0008 with label smoothing on, and
        # -0.0003 without it (benchmarks/foundation_experiments.md, session 19): kept at 100.
        warmup_steps=100,
        max_epochs=5,
        batch_size=64,
        eval_every=200,
        early_stopping_patience=3,
        checkpoint_every=200,
        # Half the CPU time on the demo's windows at equal validation NDCG@10 (2026-01-05,
        # seeds 0-3: 0.2361 / 0.2347 / 0.2349 / 0.2392 against 0.2344 / 0.2360 / 0.2359 / 0.2368).
        length_grouping=16,
    ),
    "benchmark": TrainConfig(
        lr=1e-3,
        warmup_steps=1000,
        max_epochs=20,
        batch_size=256,
        eval_every=1000,
        early_stopping_patience=5,
        checkpoint_every=1000,
    ),
}
"""Named loop settings paired with the model presets of ``pipelines.models.config``."""


@dataclass(frozen=True)
class TrainResult:
    """How a run ended."""

    steps: int  # optimizer steps taken in total (including before a resume)
    final_train_metrics: dict[str, float]  # metrics of the last step (rank-averaged)
    best_metric: float | None  # best validation value of the early-stopping metric
    best_step: int | None  # step of best_metric
    stopped_early: bool  # early stopping ended the run
    checkpoint: Path | None  # the final checkpoint, when checkpoint_dir was given
    out_of_cpu: bool = False  # max_cpu_seconds ended the run before max_steps


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in a (possibly one-process) data-parallel run."""

    rank: int
    world_size: int
    device: torch.device
    owns_group: bool  # this loop created the process group and must destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistributedContext:
    """Join the ``torchrun`` process group when ``WORLD_SIZE`` > 1 (gloo on CPU, nccl on CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world_size == 1:
        return DistributedContext(0, 1, device, owns_group=False)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return DistributedContext(dist.get_rank(), dist.get_world_size(), device, owns_group=owns)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the peak LR at ``step``: linear warm-up, then cosine to ``min_lr_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # Decay matrices only: decaying biases, norm gains and scalar gates just fights the data.
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def _epoch_batches(
    dataset_size: int,
    ctx: DistributedContext,
    local_batch: int,
    seed: int,
    epoch: int,
    shuffle: bool,
    drop_last: bool,
) -> list[list[int]]:
    """This rank's batches of one epoch; a function of (seed, epoch) only, so it replays."""
    # DistributedSampler with num_replicas=1 is a seeded shuffle, so one process and N ranks
    # share one code path; rank r takes every world_size-th index of the same permutation, so
    # the union of the ranks' i-th batches is the one-process i-th global batch.
    sampler = DistributedSampler(
        range(dataset_size), num_replicas=ctx.world_size, rank=ctx.rank, shuffle=shuffle, seed=seed
    )
    sampler.set_epoch(epoch)
    order = list(sampler)
    stop = len(order) - len(order) % local_batch if drop_last else len(order)
    return [order[i : i + local_batch] for i in range(0, stop, local_batch)]


def _length_grouped_batches(
    lengths: np.ndarray,
    ctx: DistributedContext,
    global_batch: int,
    group: int,
    seed: int,
    epoch: int,
) -> list[list[int]]:
    """This rank's batches of one epoch under ``TrainConfig.length_grouping``; a function of
    (seed, epoch) only, like ``_epoch_batches``. Rank r takes every world_size-th example of
    each global batch, so the ranks' i-th batches together are the one-process i-th batch
    (a global batch is only cut once it holds at least world_size examples)."""
    rng = np.random.default_rng((seed, epoch))
    order = rng.permutation(len(lengths))
    budget = global_batch * float(lengths.mean())  # a random global batch's tokens, on average
    span = group * global_batch
    batches: list[list[int]] = []
    for start in range(0, len(order), span):
        chunk = order[start : start + span]
        batch: list[int] = []
        tokens = 0
        for i in chunk[np.argsort(lengths[chunk], kind="stable")].tolist():
            if tokens + lengths[i] > budget and len(batch) >= ctx.world_size:
                batches.append(batch)
                batch, tokens = [], 0
            batch.append(i)
            tokens += int(lengths[i])
        if len(batch) >= ctx.world_size:
            batches.append(batch)
    return [batches[j][ctx.rank :: ctx.world_size] for j in rng.permutation(len(batches))]


def epoch_batches(
    train_data: Dataset, config: TrainConfig, epoch: int, ctx: DistributedContext | None = None
) -> list[list[int]]:
    """The example indices of each of this rank's training batches in ``epoch``, in order: a
    function of (config.seed, epoch) alone, so a resumed run replays it. ``ctx``: one process
    when None."""
    ctx = ctx or DistributedContext(0, 1, torch.device("cpu"), owns_group=False)
    if not config.length_grouping:
        local_batch = config.batch_size // ctx.world_size
        return _epoch_batches(len(train_data), ctx, local_batch, config.seed, epoch, True, True)
    lengths = getattr(train_data, "lengths", None)
    if lengths is None:
        raise ValueError(
            f"length_grouping needs the example lengths: {type(train_data).__name__} has no "
            "`lengths` array"
        )
    return _length_grouped_batches(
        np.asarray(lengths), ctx, config.batch_size, config.length_grouping, config.seed, epoch
    )


def _loader(
    dataset: Dataset,
    batches: Sequence[list[int]],
    collate_fn: Callable[[list[Any]], Any],
    num_workers: int,
) -> DataLoader:
    # An explicit generator keeps the DataLoader from drawing its base seed from the global
    # torch RNG, which would make the training RNG stream depend on when loaders are built.
    return DataLoader(
        dataset,
        batch_sampler=batches,
        collate_fn=collate_fn,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(0),
    )


def _mean_across_ranks(metrics: dict[str, float], ctx: DistributedContext) -> dict[str, float]:
    if ctx.world_size == 1:
        return metrics
    names = sorted(metrics)
    values = torch.tensor([metrics[n] for n in names], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(values)
    return {n: float(v) / ctx.world_size for n, v in zip(names, values.tolist(), strict=True)}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loss_fn: LossFn,
    dataset: Dataset,
    collate_fn: Callable[[list[Any]], Any],
    config: TrainConfig,
    ctx: DistributedContext | None = None,
) -> dict[str, float]:
    """Row-weighted mean of ``loss_fn``'s metrics over ``dataset``, in eval mode.

    Under DDP each rank scores its shard and the results are summed across ranks, so the
    mean is the one-process mean: the row the sampler repeats to even out the shards is
    scored in a batch of its own and weighs nothing.
    """
    ctx = ctx or DistributedContext(0, 1, next(model.parameters()).device, owns_group=False)
    if len(dataset) == 0:
        raise ValueError("the validation dataset is empty")
    was_training = model.training
    model.eval()
    local_batch = max(config.batch_size // ctx.world_size, 1)
    shard = list(
        DistributedSampler(
            range(len(dataset)), num_replicas=ctx.world_size, rank=ctx.rank, shuffle=False
        )
    )
    real = len(range(ctx.rank, len(dataset), ctx.world_size))  # shard[real:] repeats rows
    batches = [shard[i : min(i + local_batch, real)] for i in range(0, real, local_batch)]
    counts = [1] * len(batches)  # whether a batch's rows count
    if real < len(shard):  # every rank scores at least a batch, so all know the metric names
        batches, counts = [*batches, shard[real:]], [*counts, 0]
    totals: dict[str, float] = {}
    rows = 0
    loader = _loader(dataset, batches, collate_fn, config.num_workers)
    for batch, count in zip(loader, counts, strict=True):
        batch = batch.to(ctx.device)
        with _autocast(ctx.device, config.amp):
            _, metrics = loss_fn(model, batch)
        weight = len(batch) * count
        for name, value in metrics.items():
            totals[name] = totals.get(name, 0.0) + value * weight
        rows += weight
    model.train(was_training)
    names = sorted(totals)
    sums = torch.tensor([totals[n] for n in names] + [rows], dtype=torch.float64, device=ctx.device)
    if ctx.world_size > 1:
        dist.all_reduce(sums)
    return {n: float(s / sums[-1]) for n, s in zip(names, sums[:-1], strict=True)}


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _improved(value: float, best: float | None, mode: str) -> bool:
    return best is None or (value < best if mode == "min" else value > best)


def train(
    model: nn.Module,
    loss_fn: LossFn,
    train_data: Dataset,
    config: TrainConfig,
    collate_fn: Callable[[list[Any]], Any],
    val_data: Dataset | None = None,
    checkpoint_dir: str | Path | None = None,
    log_metrics: MetricsLogger | None = None,
    resume: bool = True,
) -> TrainResult:
    """Train ``model`` in place and return how the run ended.

    With ``checkpoint_dir`` the run writes checkpoints there and, if ``resume`` and one exists,
    continues from the newest. Build the model (seeded) before calling: under DDP, rank 0's
    initial weights are broadcast to every rank. Metrics are logged as ``train/<name>``,
    ``train/lr``, ``train/grad_norm`` and ``val/<name>``.
    """
    ctx = init_distributed()
    try:
        return _train(
            model,
            loss_fn,
            train_data,
            config,
            collate_fn,
            val_data,
            checkpoint_dir,
            log_metrics,
            resume,
            ctx,
        )
    finally:
        if ctx.owns_group:
            dist.destroy_process_group()


def _train(
    model: nn.Module,
    loss_fn: LossFn,
    train_data: Dataset,
    config: TrainConfig,
    collate_fn: Callable[[list[Any]], Any],
    val_data: Dataset | None,
    checkpoint_dir: str | Path | None,
    log_metrics: MetricsLogger | None,
    resume: bool,
    ctx: DistributedContext,
) -> TrainResult:
    if config.batch_size % ctx.world_size:
        raise ValueError(
            f"batch_size={config.batch_size} must divide evenly over {ctx.world_size} ranks"
        )
    steps_per_epoch = len(epoch_batches(train_data, config, 0, ctx))
    if steps_per_epoch == 0:
        raise ValueError(
            f"{len(train_data)} training examples make no batch of {config.batch_size}: "
            "lower batch_size or add data"
        )
    total_steps = config.max_steps or steps_per_epoch * (config.max_epochs or 1)
    if val_data is None and config.early_stopping_patience:
        raise ValueError("early stopping needs val_data")
    if config.max_cpu_seconds is not None and ctx.world_size > 1:
        raise ValueError(
            "max_cpu_seconds caps one process's CPU time: DDP ranks would stop at different "
            "steps; cap the run with max_steps instead"
        )

    seed_everything(config.seed + ctx.rank)
    model.to(ctx.device).train()
    optimizer = torch.optim.AdamW(
        _param_groups(model, config.weight_decay),
        lr=config.lr,
        betas=config.betas,
        fused=ctx.device.type == "cuda",
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(step, config.warmup_steps, total_steps, config.min_lr_ratio),
    )
    state, best_weights = TrainerState(), None
    average = WeightAverage(model, config.ema_decay) if config.ema_decay else None
    if checkpoint_dir is not None and resume and (found := latest_checkpoint(checkpoint_dir)):
        state, best_weights, saved_average = load_checkpoint(found, model, optimizer, scheduler)
        if average is not None:
            if saved_average is None:
                raise ValueError(f"{found} holds no weight average; resume with ema_decay=0")
            average.load_state_dict(saved_average)

    # Validation, the best weights and the final model see the average when there is one.
    def averaged() -> contextlib.AbstractContextManager:
        return average.applied(model) if average is not None else contextlib.nullcontext()

    # A model may leave parameters out of some steps' graphs (the freshness bias without
    # request times, heads a batch does not reach); DDP must then be told to look for them.
    wrapped = (
        DistributedDataParallel(model, find_unused_parameters=True) if ctx.world_size > 1 else model
    )

    def checkpoint() -> Path | None:
        if checkpoint_dir is None:
            return None
        path = None
        if ctx.is_main:
            path = save_checkpoint(
                checkpoint_dir,
                model,
                optimizer,
                scheduler,
                state,
                best_weights,
                config.keep_checkpoints,
                average.state_dict() if average is not None else None,
            )
        if ctx.world_size > 1:
            dist.barrier()
        return path

    validated_at: int | None = None

    def validate() -> bool:
        """Run validation, log it, update early stopping; True when the run should stop."""
        nonlocal best_weights, validated_at
        validated_at = state.step
        with averaged():  # the weights validated, and kept when best, are the average
            metrics = evaluate(model, loss_fn, val_data, collate_fn, config, ctx)
            if ctx.is_main and log_metrics is not None:
                log_metrics({f"val/{k}": v for k, v in metrics.items()}, state.step)
            if config.early_stopping_metric not in metrics:
                raise KeyError(
                    f"early_stopping_metric {config.early_stopping_metric!r} is not among the "
                    f"validation metrics {sorted(metrics)}"
                )
            value = metrics[config.early_stopping_metric]
            if _improved(value, state.best_metric, config.early_stopping_mode):
                state.best_metric, state.best_step, state.evals_since_best = value, state.step, 0
                if config.early_stopping_patience and config.restore_best:
                    best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                state.evals_since_best += 1
        return bool(config.early_stopping_patience) and (
            state.evals_since_best >= config.early_stopping_patience
        )

    progress = tqdm(
        total=total_steps,
        initial=state.step,
        desc="train",
        disable=not (config.progress and ctx.is_main),
    )
    train_metrics: dict[str, float] = {}
    stopped_early = out_of_cpu = False
    cpu_started = time.process_time()
    try:
        while state.step < total_steps and not (stopped_early or out_of_cpu):
            batches = epoch_batches(train_data, config, state.epoch, ctx)[state.batch_in_epoch :]
            for batch in _iterate(train_data, batches, collate_fn, config, ctx):
                with _autocast(ctx.device, config.amp):
                    loss, metrics = loss_fn(wrapped, batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = (
                    nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                    if config.grad_clip > 0
                    else _grad_norm(model)
                )
                if not torch.isfinite(grad_norm):
                    raise FloatingPointError(
                        f"non-finite gradient norm at step {state.step}; lower lr or check data"
                    )
                lr = scheduler.get_last_lr()[0]
                optimizer.step()
                scheduler.step()
                if average is not None:
                    average.update(model, state.step)
                state.step += 1
                state.batch_in_epoch += 1
                train_metrics = _mean_across_ranks(metrics, ctx)
                progress.update(1)
                progress.set_postfix(loss=f"{float(loss.detach()):.4f}")
                if ctx.is_main and log_metrics is not None:
                    logged = {f"train/{k}": v for k, v in train_metrics.items()}
                    log_metrics(
                        {**logged, "train/lr": lr, "train/grad_norm": float(grad_norm)}, state.step
                    )
                if (
                    val_data is not None
                    and config.eval_every
                    and state.step % config.eval_every == 0
                ):
                    stopped_early = validate()
                if config.checkpoint_every and state.step % config.checkpoint_every == 0:
                    checkpoint()
                out_of_cpu = (
                    config.max_cpu_seconds is not None
                    and time.process_time() - cpu_started >= config.max_cpu_seconds
                    and state.step < total_steps
                )
                if stopped_early or out_of_cpu or state.step >= total_steps:
                    break
            else:
                state.epoch += 1
                state.batch_in_epoch = 0
                if val_data is not None and not config.eval_every:
                    stopped_early = validate()
    finally:
        progress.close()
    if val_data is not None and validated_at != state.step:
        # The last step's weights have not been validated yet.
        validate()
    if best_weights is not None and config.restore_best:
        model.load_state_dict(best_weights)
    elif average is not None:
        average.copy_to(model)
    return TrainResult(
        state.step,
        train_metrics,
        state.best_metric,
        state.best_step,
        stopped_early,
        checkpoint(),
        out_of_cpu,
    )


def _iterate(
    dataset: Dataset,
    batches: Sequence[list[int]],
    collate_fn: Callable[[list[Any]], Any],
    config: TrainConfig,
    ctx: DistributedContext,
) -> Iterator[Any]:
    for batch in _loader(dataset, batches, collate_fn, config.num_workers):
        yield batch.to(ctx.device)


def _grad_norm(model: nn.Module) -> torch.Tensor:
    norms = [p.grad.norm() for p in model.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())
