"""An exponential moving average of a model's weights (Polyak averaging), for the shared loop.

The average of the last few hundred steps' weights is a smoother model than the last step's:
it validates and generalises better when the data is small and the last steps are noisy, which
is every recommender trained here on CPU. The loop validates, keeps as "best" and returns the
averaged weights when ``TrainConfig.ema_decay`` is set; training itself always steps the raw
weights, and a checkpoint stores both, so a resumed run averages exactly as an unbroken one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class WeightAverage:
    """The EMA of ``model``'s trainable floating-point parameters (buffers are not averaged).

    The effective decay at step t is ``min(decay, (1 + t) / (10 + t))``: early on the average
    follows the weights closely instead of dragging the random initialisation along.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.names = [n for n, p in model.named_parameters() if _averaged(p)]
        self.shadow = [p.detach().clone() for p in self._params(model)]

    def _params(self, model: nn.Module) -> list[torch.Tensor]:
        params = dict(model.named_parameters())
        return [params[n] for n in self.names]

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Fold in the weights after optimizer step ``step`` (0-based count before the step)."""
        decay = min(self.decay, (1.0 + step) / (10.0 + step))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self._params(model)], 1.0 - decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's parameters with the average."""
        torch._foreach_copy_(self._params(model), self.shadow)

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """The model holds the averaged weights inside the block and its own after it."""
        with torch.no_grad():
            saved = [p.detach().clone() for p in self._params(model)]
        self.copy_to(model)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self._params(model), saved)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.shadow, strict=True))

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if sorted(state) != sorted(self.names):
            raise ValueError("the checkpoint's weight average does not match the model")
        for shadow, name in zip(self.shadow, self.names, strict=True):
            shadow.copy_(state[name])


def _averaged(param: torch.Tensor) -> bool:
    return param.requires_grad and param.is_floating_point()
