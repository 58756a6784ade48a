"""The one checkpoint format of every reelfm training run, built to resume exactly.

A checkpoint is a directory ``<checkpoint_dir>/step-<8 digits>/`` holding ``model.safetensors``
(the weights), ``best_model.safetensors`` (the best weights so far, when early stopping tracks
them), ``ema_model.safetensors`` (the running weight average, when the run keeps one) and
``training_state.pt`` (optimizer, LR scheduler, loop progress and every RNG state).
Restoring all of it, and replaying the data order from the saved epoch and batch position,
makes a resumed run finish with the same weights as one that never stopped. A checkpoint is
written under a temporary name and renamed, so a crash mid-write never leaves a half checkpoint
that ``latest_checkpoint`` would pick.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

STEP_PREFIX = "step-"
MODEL_FILE = "model.safetensors"
BEST_MODEL_FILE = "best_model.safetensors"
EMA_MODEL_FILE = "ema_model.safetensors"
STATE_FILE = "training_state.pt"


@dataclass
class TrainerState:
    """Where a run is: enough, with the RNG states, to continue it bit for bit."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0  # epoch in progress (the data order is a function of seed and epoch)
    batch_in_epoch: int = 0  # batches of this epoch already consumed
    best_metric: float | None = None  # best validation value of the early-stopping metric
    best_step: int | None = None  # step that reached best_metric
    evals_since_best: int = 0  # validations without improvement, for early stopping


def rng_states() -> dict[str, object]:
    """Every RNG a training step can draw from (Python, NumPy, torch CPU and CUDA)."""
    bit_generator, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        # Stored as tensors and plain numbers so the file loads with weights_only=True.
        "numpy": (bit_generator, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(states: dict[str, object]) -> None:
    """Restore what ``rng_states`` captured."""
    random.setstate(states["python"])
    bit_generator, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((bit_generator, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}


def save_checkpoint(
    checkpoint_dir: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: TrainerState,
    best_weights: dict[str, torch.Tensor] | None = None,
    keep_last: int = 2,
    average: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``step-<state.step>/`` and keep only the newest ``keep_last`` checkpoints.

    ``model`` is the bare module (not a DDP wrapper), so names carry no ``module.`` prefix.
    """
    checkpoint_dir = Path(checkpoint_dir)
    final = checkpoint_dir / f"{STEP_PREFIX}{state.step:08d}"
    partial = checkpoint_dir / f".{final.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_file(_weights(model), partial / MODEL_FILE)
    if best_weights is not None:
        save_file(
            {k: v.contiguous().cpu() for k, v in best_weights.items()}, partial / BEST_MODEL_FILE
        )
    if average is not None:
        save_file({k: v.contiguous().cpu() for k, v in average.items()}, partial / EMA_MODEL_FILE)
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "trainer": asdict(state),
            "rng": rng_states(),
        },
        partial / STATE_FILE,
    )
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    for old in sorted(checkpoint_dir.glob(f"{STEP_PREFIX}*"))[:-keep_last]:
        shutil.rmtree(old)
    return final


def latest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The newest complete checkpoint under ``checkpoint_dir``, or None if there is none."""
    checkpoints = sorted(Path(checkpoint_dir).glob(f"{STEP_PREFIX}*"))
    return checkpoints[-1] if checkpoints else None


def load_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> tuple[TrainerState, dict[str, torch.Tensor] | None, dict[str, torch.Tensor] | None]:
    """Load a checkpoint into ``model``/``optimizer``/``scheduler`` and restore the RNGs.

    Returns the loop state, the best weights and the weight average (each None if the run kept
    none). The model must have the architecture the checkpoint was written from; a mismatch
    raises.
    """
    path = Path(path)
    device = next(model.parameters()).device
    model.load_state_dict(load_file(path / MODEL_FILE, device=str(device)), strict=True)
    best_file = path / BEST_MODEL_FILE
    best = load_file(best_file) if best_file.exists() else None
    ema_file = path / EMA_MODEL_FILE
    average = load_file(ema_file, device=str(device)) if ema_file.exists() else None
    saved = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    set_rng_states(saved["rng"])
    return TrainerState(**saved["trainer"]), best, average
