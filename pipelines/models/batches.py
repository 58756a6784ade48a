"""``SequenceBatch``: the typed, right-padded batch of interaction-token sequences.

Every model entry point (training loss, ``recommend``, the KV cache) takes this one container, so
shapes, dtypes and the padding convention are written down here and nowhere else. Sequences are
right-padded: real tokens fill positions ``0..length-1`` and padding follows, which keeps causal
attention free of padding masks (a real token never attends to a later position) and puts a
row's newest token at ``length - 1``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

PAD_INDEX = -1
"""Title index of a padding position, and the target of a position with nothing to predict.

Padded positions carry 0 in every feature column; only ``titles`` (and ``targets``) mark them.
"""


@dataclass(frozen=True)
class SequenceBatch:
    """B right-padded sequences of T tokens, in title-index space (token id - FIRST_TITLE_ID).

    Feature ids index the enums of ``pipelines.schemas`` (``ACTIONS``, ``DEVICES``); buckets are
    the ``gold/interaction_tokens`` integers as they are.
    """

    titles: torch.Tensor  # (B, T) int64: title index, PAD_INDEX (-1) at padding
    actions: torch.Tensor  # (B, T) int64: index into schemas.ACTIONS
    watch_fraction: torch.Tensor  # (B, T) int64: watch_fraction_bucket 0..5
    gaps: torch.Tensor  # (B, T) int64: gap_bucket 0..15
    devices: torch.Tensor  # (B, T) int64: index into schemas.DEVICES
    hours: torch.Tensor  # (B, T) int64: hour of day 0..23 (UTC)
    weekdays: torch.Tensor  # (B, T) int64: weekday 0..6, Monday = 0
    targets: torch.Tensor | None = None  # (B, T) int64: next title index, PAD_INDEX = no loss
    # When things happened, for the model's freshness bias (a title's age at the request).
    # None: unknown, and the model scores without freshness. 0 at padding.
    times: torch.Tensor | None = None  # (B, T) int64: unix seconds of each token
    target_times: torch.Tensor | None = None  # (B, T) int64: unix seconds of each target, i.e.
    # when the next title was chosen (the request it answers); 0 where there is no target

    def __post_init__(self) -> None:
        shape = self.titles.shape
        if self.titles.dim() != 2:
            raise ValueError(f"titles must be (B, T), got shape {tuple(shape)}")
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if value.shape != shape or value.dtype != torch.int64:
                raise ValueError(
                    f"{f.name} must be int64 of shape {tuple(shape)} like titles, "
                    f"got {value.dtype} {tuple(value.shape)}"
                )

    @property
    def mask(self) -> torch.Tensor:
        """(B, T) bool: True at real tokens."""
        return self.titles != PAD_INDEX

    @property
    def lengths(self) -> torch.Tensor:
        """(B,) int64: real tokens per row."""
        return self.mask.sum(dim=1)

    def __len__(self) -> int:
        return self.titles.shape[0]

    def to(self, device: torch.device | str) -> SequenceBatch:
        """The same batch on ``device`` (non-blocking where the source is pinned)."""
        return replace(
            self,
            **{
                f.name: getattr(self, f.name).to(device, non_blocking=True)
                for f in fields(self)
                if getattr(self, f.name) is not None
            },
        )

    def feature_tensors(self) -> tuple[torch.Tensor, ...]:
        """The six feature columns, in the order the model's feature embeddings are built."""
        return (
            self.actions,
            self.watch_fraction,
            self.gaps,
            self.devices,
            self.hours,
            self.weekdays,
        )

    def latest(self, window: int) -> SequenceBatch:
        """Each row's newest ``window`` tokens, still right-padded; (B, min(T, window)).

        Targets (and their times) are dropped: this is the view inference takes of a longer
        history; token times are kept.
        """
        width = min(self.titles.shape[1], window)
        lengths = self.lengths  # (B,)
        start = (lengths - width).clamp(min=0)  # (B,)
        offsets = torch.arange(width, device=self.titles.device)  # (W,)
        index = (start[:, None] + offsets[None, :]).clamp(max=self.titles.shape[1] - 1)  # (B, W)
        valid = offsets[None, :] < lengths.clamp(max=width)[:, None]  # (B, W)

        def take(column: torch.Tensor, pad: int) -> torch.Tensor:
            return torch.where(valid, column.gather(1, index), pad)

        return SequenceBatch(
            titles=take(self.titles, PAD_INDEX),
            actions=take(self.actions, 0),
            watch_fraction=take(self.watch_fraction, 0),
            gaps=take(self.gaps, 0),
            devices=take(self.devices, 0),
            hours=take(self.hours, 0),
            weekdays=take(self.weekdays, 0),
            times=None if self.times is None else take(self.times, 0),
        )

    @property
    def last_times(self) -> torch.Tensor | None:
        """(B,) int64 unix seconds of each row's newest token, the default request time; None
        when the batch carries no times."""
        if self.times is None:
            return None
        rows = torch.arange(len(self), device=self.times.device)
        return self.times[rows, (self.lengths - 1).clamp(min=0)]
