"""The shared training loop (``loop``) and its checkpoint format (``checkpoint``).

Every recipe, from pretraining to distillation, trains through ``train`` with its own loss
callable, so seeds, schedules, DDP, early stopping and exact resumption are written once.
"""

from pipelines.training.checkpoint import TrainerState, latest_checkpoint
from pipelines.training.loop import (
    TRAIN_PRESETS,
    TrainConfig,
    TrainResult,
    evaluate,
    seed_everything,
    train,
)

__all__ = [
    "TRAIN_PRESETS",
    "TrainConfig",
    "TrainResult",
    "TrainerState",
    "evaluate",
    "latest_checkpoint",
    "seed_everything",
    "train",
]
