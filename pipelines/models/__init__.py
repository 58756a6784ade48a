"""The foundation model (``foundation``), its config and presets, typed batches and windowing.

``pipelines.models`` is pure PyTorch: token rows in, windows and a trained model out. The
training loop that drives it is shared with post-training recipes and lives in
``pipelines.training``.
"""

from pipelines.models.batches import PAD_INDEX, SequenceBatch
from pipelines.models.config import PRESETS, FoundationConfig
from pipelines.models.foundation import FoundationModel, FoundationOutput, KVCache, pretraining_loss

__all__ = [
    "PAD_INDEX",
    "PRESETS",
    "FoundationConfig",
    "FoundationModel",
    "FoundationOutput",
    "KVCache",
    "SequenceBatch",
    "pretraining_loss",
]
