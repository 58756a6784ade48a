"""Foundation model speed: training tokens/s, achieved FLOP/s, peak memory, recommend latency.

Run: ``.venv/bin/python benchmarks/model_throughput.py --preset demo [--steps 10]``.

Achieved FLOP/s is put next to a 1024x1024 fp32 matmul measured in the same run, so the ratio
says how much of the machine the model uses whatever the hardware. Training runs in rounds, each
timing the matmul just before its steps, and the median round's ratio is the figure: on a shared
machine one round can land on a busy second. Recommend latency is for one member (history 200,
k=100) over a 2k and a 20k catalogue: uncached (the whole window every call) and with the KV
cache (append one event, re-score). Inputs are random: speed does not
depend on what the tokens are.
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable

import numpy as np
import torch

from pipelines.models import FoundationConfig, FoundationModel, SequenceBatch, pretraining_loss

N_FEATURE_VALUES = (8, 6, 16, 6, 24, 7)  # actions, watch, gap, device, hour, weekday


def random_batch(batch: int, length: int, num_titles: int, device: torch.device) -> SequenceBatch:
    def draw(high: int) -> torch.Tensor:
        return torch.randint(0, high, (batch, length), device=device)

    return SequenceBatch(draw(num_titles), *(draw(h) for h in N_FEATURE_VALUES), draw(num_titles))


def build_model(preset: str, num_titles: int, device: torch.device) -> FoundationModel:
    config = FoundationConfig.from_preset(
        preset, num_titles=num_titles, num_genres=20, mtp_n=0, genre_weight=0.0
    )
    model = FoundationModel(config).to(device)
    model.set_title_metadata(
        (torch.rand(num_titles, config.metadata_dim) > 0.8).float(),
        torch.rand(num_titles) * 3000,
        torch.ones(num_titles, dtype=torch.bool),
    )
    return model


def training_flops_per_token(config: FoundationConfig) -> float:
    """Approximate training FLOPs per token: 3x (forward matmuls + attention + full softmax)."""
    D, L, T, N = config.d_model, config.n_layers, config.max_len, config.num_titles
    block_params = L * (4 * D * D + 2 * config.mlp_ratio * D * D)  # qkv + proj + MLP
    attention = L * 2 * 2 * T * D / 2  # QK^T and AV, causal: half the positions on average
    softmax = 2 * D * N  # hidden x every title embedding
    metadata = 2 * (config.metadata_dim * D + D * D) * N / T  # title table, amortised per token
    if config.history_metadata:  # each history token's own projection of its metadata
        metadata += 2 * config.metadata_dim * D
    return 3 * (2 * block_params + attention + softmax + metadata)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def matmul_flops(device: torch.device, reps: int = 20) -> float:
    a = torch.randn(1024, 1024, device=device)
    b = torch.randn(1024, 1024, device=device)
    a @ b  # warm-up
    seconds = timed(lambda: [a @ b for _ in range(reps)], device)
    return 2 * 1024**3 * reps / seconds


def training_throughput(
    preset: str, num_titles: int, batch: int, steps: int, rounds: int, device: torch.device
) -> list[tuple[float, float, float]]:
    """Per round: (tokens/s, achieved FLOP/s, matmul FLOP/s) of forward + backward + AdamW on
    full windows, each round's matmul measured just before its steps so that both see the
    same load on a shared machine."""
    model = build_model(preset, num_titles, device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    data = random_batch(batch, model.config.max_len, num_titles, device)

    def step() -> None:
        loss, _ = pretraining_loss(model, data)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up: allocator, kernels
    results = []
    for _ in range(rounds):
        reference = matmul_flops(device)
        seconds = timed(lambda: [step() for _ in range(steps)], device)
        tokens_per_s = batch * model.config.max_len * steps / seconds
        results.append(
            (tokens_per_s, tokens_per_s * training_flops_per_token(model.config), reference)
        )
    return results


def recommend_latency(
    preset: str, num_titles: int, history: int, k: int, reps: int, device: torch.device
) -> dict[str, tuple[float, float]]:
    """p50/p99 milliseconds of one member's recommendation, uncached and cached."""
    model = build_model(preset, num_titles, device).eval()
    events = random_batch(1, history + reps, num_titles, device)

    def prefix(n: int) -> SequenceBatch:
        return SequenceBatch(*(getattr(events, f)[:, :n] for f in _COLUMNS))

    full = prefix(history)
    uncached = [timed(lambda: model.recommend(full, k), device) for _ in range(reps)]
    # The cache holds max_len tokens; start it with room left so every step is incremental
    # (a full cache slides by recomputing the window, i.e. costs what uncached does).
    room = min(history, model.config.max_len) - reps
    cache = model.init_cache(prefix(room))
    cached = []
    for i in range(reps):
        token = SequenceBatch(*(getattr(events, f)[:, room + i : room + i + 1] for f in _COLUMNS))
        cached.append(
            timed(lambda t=token: model.recommend_cached(model.step(cache, t), k), device)
        )
    return {
        "uncached": _percentiles(uncached),
        "cached (append 1 event)": _percentiles(cached),
    }


_COLUMNS = ("titles", "actions", "watch_fraction", "gaps", "devices", "hours", "weekdays")


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.array(seconds) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo", help="model size preset (tiny/demo/benchmark)")
    parser.add_argument("--titles", type=int, default=2000, help="catalogue size for training")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch (windows)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps a round")
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds of (matmul, training steps); the median"
    )
    parser.add_argument("--reps", type=int, default=50, help="timed recommend calls per setting")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0: torch's default)"
    )
    args = parser.parse_args()
    if args.threads:
        # On a shared, loaded CPU, OpenMP threads that wait on each other can be 10x slower.
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)

    rounds = training_throughput(
        args.preset, args.titles, args.batch_size, args.steps, args.rounds, device
    )
    print(f"device: {device} ({torch.get_num_threads()} threads)  preset: {args.preset}")
    for i, (tokens_per_s, flops, reference) in enumerate(rounds, start=1):
        print(f"round {i}: 1024^2 fp32 matmul {reference / 1e9:.1f} GFLOP/s; training "
              f"{tokens_per_s:,.0f} tokens/s, {flops / 1e9:.2f} GFLOP/s "
              f"({100 * flops / reference:.1f}% of the matmul)")  # fmt: skip
    share = float(np.median([flops / reference for _, flops, reference in rounds]))
    tokens = float(np.median([tokens_per_s for tokens_per_s, _, _ in rounds]))
    print(f"training (median of {len(rounds)} rounds): {tokens:,.0f} tokens/s, "
          f"{100 * share:.1f}% of the matmul")  # fmt: skip
    for titles in (2_000, 20_000):
        latency = recommend_latency(args.preset, titles, 200, 100, args.reps, device)
        for mode, (p50, p99) in latency.items():
            print(f"recommend {titles:>6} titles, history 200, k=100, {mode}: "
                  f"p50 {p50:.2f} ms  p99 {p99:.2f} ms")  # fmt: skip
    print(f"peak memory: {peak_memory_mb(device):,.0f} MiB")


if __name__ == "__main__":
    main()
