"""The synthetic members: latent taste, activity, devices, viewing hours, binge propensity, country.

Members are the other half of the synthetic world (the catalogue is the first). Like the
catalogue they come from the config and its seed alone, so the oracle rebuilds the exact tastes
the generator sampled from without any of the generator's run state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pipelines.schemas import DEVICES

if TYPE_CHECKING:
    from pipelines.sources.synthetic import SyntheticConfig

COUNTRIES: tuple[str, ...] = (
    "US", "GB", "CA", "DE", "FR", "BR", "MX", "IN", "JP", "KR", "ES", "IT", "AU", "NL", "SE",
)  # fmt: skip
_COUNTRY_WEIGHTS = np.array([30, 8, 5, 6, 5, 9, 6, 8, 4, 3, 4, 4, 3, 2, 3], dtype=np.float64)


@dataclass(frozen=True)
class Members:
    """Every member as parallel arrays over ``N`` members; member ``i`` is ``user_ids[i]``."""

    user_ids: list[str]
    """``u000123``-style ids."""
    factors: np.ndarray
    """(N, K) x float64 latent taste; affinity to a title is ``factors @ title.factors``."""
    activity: np.ndarray
    """(N,) x float64 mean sessions per weekday (weekends are boosted by the config)."""
    binge: np.ndarray
    """(N,) x float64 in (0, 1): chance of another title after each one in a session."""
    device_cdf: np.ndarray
    """(N, len(DEVICES)) x float64 cumulative device preference, sampled once per session."""
    peak_hour: np.ndarray
    """(N,) x float64 hour of day (UTC) around which the member's sessions start."""
    hour_spread: np.ndarray
    """(N,) x float64 standard deviation of session start hours around ``peak_hour``."""
    country: np.ndarray
    """(N,) x int64 index into ``COUNTRIES``."""

    @property
    def n_members(self) -> int:
        return len(self.user_ids)


def user_id_width(n_members: int) -> int:
    """Digits in a user id: at least six, more when the world is bigger."""
    return max(6, len(str(max(n_members - 1, 0))))


def build_members(config: SyntheticConfig) -> Members:
    """Build the world's members from ``config`` and ``config.seed`` alone (deterministic)."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0, 1]))
    n = config.n_members
    width = user_id_width(n)
    # Log-normal activity: a few heavy viewers, a long tail of occasional ones, with the mean
    # pinned to sessions_per_day_mean whatever the spread.
    sigma = config.activity_sigma
    activity = config.sessions_per_day_mean * np.exp(
        sigma * rng.normal(size=n) - 0.5 * sigma * sigma
    )
    a = config.binge_mean * config.binge_concentration
    b = (1.0 - config.binge_mean) * config.binge_concentration
    binge = rng.beta(a, b, size=n)
    # Most members favour one or two devices; "unknown" stays rare.
    alpha = np.full(len(DEVICES), 0.6)
    alpha[DEVICES.index("unknown")] = 0.05
    device_p = rng.dirichlet(alpha, size=n)
    # Evenings dominate; a minority watches at lunch or late at night (which crosses midnight).
    peak = np.where(rng.random(n) < 0.8, rng.normal(20.5, 1.5, size=n), rng.uniform(0, 24, n))
    return Members(
        user_ids=[f"u{i:0{width}d}" for i in range(n)],
        factors=rng.normal(scale=config.member_taste_scale, size=(n, config.latent_dim)),
        activity=activity,
        binge=binge,
        device_cdf=np.cumsum(device_p, axis=1),
        peak_hour=np.mod(peak, 24.0),
        hour_spread=rng.uniform(0.7, 2.5, size=n),
        country=rng.choice(len(COUNTRIES), size=n, p=_COUNTRY_WEIGHTS / _COUNTRY_WEIGHTS.sum()),
    )
