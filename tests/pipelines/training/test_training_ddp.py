"""DDP: two CPU processes (gloo) follow the loss curve of one process with the same global batch.

The workers are started the way ``torchrun`` starts them: environment variables name the rank,
world size and rendezvous, and the loop joins the process group itself.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_training_loop import cyclic_sequences, make_model

from pipelines.models import pretraining_loss
from pipelines.models.windows import WindowDataset, collate_windows
from pipelines.training import TrainConfig, train

CONFIG = TrainConfig(lr=3e-3, warmup_steps=2, max_steps=8, batch_size=8, progress=False)


def run_training(losses_file: Path) -> None:
    # 64 members of 33 tokens: every window is full (16 targets), so each rank's mean loss
    # weighs its rows like the one-process mean does and the curves can match closely. No
    # cold-title dropout: each rank would draw its own titles, a second source of difference.
    model = make_model(cold_title_rate=0.0)
    windows = WindowDataset(
        cyclic_sequences(64, 33), model.config.max_len, model.config.window_stride
    )
    losses: list[float] = []
    world_sizes: set[int] = set()

    def log(metrics: dict[str, float], step: int) -> None:
        losses.append(metrics["train/loss"])
        world_sizes.add(dist.get_world_size() if dist.is_initialized() else 1)

    train(model, pretraining_loss, windows, CONFIG, collate_windows, log_metrics=log)
    if int(os.environ.get("RANK", "0")) == 0:
        weights = model.title_id_embedding.weight.detach().tolist()
        losses_file.write_text(
            json.dumps({"losses": losses, "weights": weights, "world_sizes": sorted(world_sizes)})
        )


def worker(rank: int, world_size: int, port: int, losses_file: Path) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    run_training(losses_file)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_matches_one_process(tmp_path: Path) -> None:
    single_file, ddp_file = tmp_path / "single.json", tmp_path / "ddp.json"
    run_training(single_file)
    mp.spawn(worker, args=(2, free_port(), ddp_file), nprocs=2, join=True)
    single, ddp = json.loads(single_file.read_text()), json.loads(ddp_file.read_text())
    assert (single["world_sizes"], ddp["world_sizes"]) == ([1], [2])
    assert len(ddp["losses"]) == len(single["losses"]) == CONFIG.max_steps
    torch.testing.assert_close(
        torch.tensor(ddp["losses"]), torch.tensor(single["losses"]), atol=1e-4, rtol=1e-4
    )
    # Gradients were averaged across ranks: both runs end with (nearly) the same weights.
    torch.testing.assert_close(
        torch.tensor(ddp["weights"]), torch.tensor(single["weights"]), atol=1e-4, rtol=1e-4
    )
