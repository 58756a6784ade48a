"""The synthetic world's true choice model, usable as an oracle for evaluation.

Inside a session the generator picks each next title from a softmax over the whole catalogue:

    logit(t) = taste_weight * affinity(member, t)             (low-rank taste)
             + popularity_weight * log_popularity(t)          (Zipf)
             + freshness_weight * exp(-age_days(t) / tau)     (recent releases)
             + rewatch_penalty            if t is a film already watched
             + continue_weight * (0.5 + binge)  if t is the next episode of a series in progress
             = -inf   if t is not released yet, or is an episode other than the member's next one

This module holds that formula once. The generator calls ``Oracle.logits`` in batches; the
evaluator calls ``Oracle.next_title_probs`` with a member's history. Everything it needs comes
from ``(config, seed)`` plus the history, so the "best possible" recommender can be rebuilt
without the generator's run state.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time
from typing import TYPE_CHECKING

import numpy as np

from pipelines.sources.catalogue import Catalogue, build_catalogue
from pipelines.sources.members import Members, build_members

if TYPE_CHECKING:
    from pipelines.sources.synthetic import SyntheticConfig

MS_PER_DAY = 86_400_000


def epoch_ms(day: date) -> int:
    """Milliseconds since the Unix epoch at 00:00 UTC of ``day``."""
    return int(datetime.combine(day, time(0), tzinfo=UTC).timestamp() * 1000)


class Oracle:
    """The true next-title distribution of the synthetic world (see the module docstring)."""

    def __init__(self, config: SyntheticConfig, catalogue: Catalogue, members: Members) -> None:
        self.config = config
        self.catalogue = catalogue
        self.members = members
        self._title_index = {t: i for i, t in enumerate(catalogue.title_ids)}
        self._user_index = {u: i for i, u in enumerate(members.user_ids)}
        self._start_ms = epoch_ms(config.start_date)
        # Affinity is normalised by sqrt(K) so taste_weight keeps its meaning at any latent_dim.
        self._scale = 1.0 / np.sqrt(config.latent_dim)

    @classmethod
    def from_config(cls, config: SyntheticConfig) -> Oracle:
        """Rebuild the world (catalogue + members) from the config and its seed."""
        return cls(config, build_catalogue(config), build_members(config))

    @property
    def title_ids(self) -> list[str]:
        """Title ids aligned with every probability vector this oracle returns."""
        return self.catalogue.title_ids

    def user_index(self, user_id: str) -> int:
        try:
            return self._user_index[user_id]
        except KeyError:
            raise KeyError(f"unknown user_id {user_id!r}: not a member of this world") from None

    def day_offset(self, at: datetime) -> int:
        """Whole days from the world's ``start_date`` to ``at`` (a naive ``at`` is read as UTC)."""
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        return (int(at.timestamp() * 1000) - self._start_ms) // MS_PER_DAY

    def affinity(self, members: np.ndarray) -> np.ndarray:
        """(M, T) x float64 taste affinity of members (indices, (M,)) to every title."""
        return (self.members.factors[members] @ self.catalogue.factors.T) * self._scale

    def day_logits(self, day: int) -> np.ndarray:
        """(T,) x float64 popularity + freshness on world day ``day``; -inf if unreleased."""
        cat, cfg = self.catalogue, self.config
        age = day - cat.release_day
        released = age >= 0
        fresh = np.exp(-np.maximum(age, 0) / cfg.freshness_tau_days)
        logits = cfg.popularity_weight * cat.log_popularity + cfg.freshness_weight * fresh
        return np.where(released, logits, -np.inf)

    def logits(
        self,
        members: np.ndarray,
        days: np.ndarray,
        seen_films: np.ndarray,
        progress: np.ndarray,
    ) -> np.ndarray:
        """Choice logits for a batch of M decisions.

        Args:
            members: (M,) x int64 member indices.
            days: (M,) x int64 world day of each decision (see ``day_offset``).
            seen_films: (M, n_films) x bool, films each member has already started.
            progress: (M, n_series) x int, the watch-order ordinal of each member's next episode.

        Returns:
            (M, T) x float64 logits, -inf where a title cannot be chosen.
        """
        cat, cfg = self.catalogue, self.config
        # In-place updates throughout: the generator calls this on (M, T) blocks many times a day.
        logits = self.members.factors[members] @ (
            (cfg.taste_weight * self._scale) * self.catalogue.factors.T
        )  # (M, T)
        unique_days, inverse = np.unique(days, return_inverse=True)
        for j, day in enumerate(unique_days.tolist()):
            if len(unique_days) == 1:
                logits += self.day_logits(day)
            else:
                rows = np.flatnonzero(inverse == j)
                logits[rows] += self.day_logits(day)
        films = logits[:, : cat.n_films]  # (M, n_films) view
        np.add(films, cfg.rewatch_penalty, out=films, where=seen_films)
        if cat.n_titles > cat.n_films:
            episodes = logits[:, cat.n_films :]  # (M, n_episodes) view
            ordinal = cat.episode_ordinal
            next_episode = progress[:, cat.episode_series] == ordinal  # (M, n_episodes)
            np.copyto(episodes, -np.inf, where=~next_episode)
            bonus = cfg.continue_weight * (0.5 + self.members.binge[members])  # (M,)
            in_progress = next_episode & (ordinal > 0)
            np.add(episodes, bonus[:, None], out=episodes, where=in_progress)
        return logits

    def unreleased_popularity_unknown(self, day: int) -> Oracle:
        """This oracle, but knowing of the titles released on or after world day ``day`` only what
        anyone could before their release: not their own popularity, but the catalogue's.

        Their log popularity becomes ``log(mean(exp(w * log_pop))) / w`` over the catalogue (w the
        popularity weight): then the choice weight ``exp(w * log_pop)`` a title gets is the
        expected one of a title drawn from the catalogue, the best guess in the softmax.
        Everything else (taste, freshness, series) stays exact.
        """
        cat, weight = self.catalogue, self.config.popularity_weight
        log_pop = cat.log_popularity.copy()
        if weight != 0:
            prior = float(np.log(np.mean(np.exp(weight * cat.log_popularity))) / weight)
            log_pop[cat.release_day >= day] = prior
        return Oracle(self.config, replace(cat, log_popularity=log_pop), self.members)

    def state_from_history(self, history_title_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(seen films (n_films,) x bool, series progress (n_series,) x int64) after a history."""
        cat = self.catalogue
        seen = np.zeros(cat.n_films, dtype=bool)
        progress = np.zeros(len(cat.series_ids), dtype=np.int64)
        for title_id in history_title_ids:
            try:
                t = self._title_index[title_id]
            except KeyError:
                raise KeyError(f"unknown title_id {title_id!r} in history") from None
            if t < cat.n_films:
                seen[t] = True
            else:
                s = cat.series_index[t]
                progress[s] = max(progress[s], cat.ordinal[t] + 1)
        return seen, progress

    def next_title_probs(
        self, user_id: str, at: datetime, history_title_ids: list[str]
    ) -> np.ndarray:
        """(T,) x float64 probability that ``user_id`` starts each title next, at time ``at``.

        ``history_title_ids`` are the titles the member started before ``at`` (their
        ``play_start`` events, oldest first); order does not change the answer.
        """
        seen, progress = self.state_from_history(history_title_ids)
        logits = self.logits(
            np.array([self.user_index(user_id)]),
            np.array([self.day_offset(at)]),
            seen[None, :],
            progress[None, :],
        )[0]
        return softmax(logits)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis; -inf logits get probability 0."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    weights = np.exp(shifted)
    return weights / weights.sum(axis=-1, keepdims=True)


WORLD_KEY = "world"
"""Key of the generator's full ``SyntheticConfig`` in each day's ``_injected.json`` manifest."""


def world_record(config: SyntheticConfig) -> dict[str, object]:
    """``config`` as JSON-ready fields, so a landing folder says which world wrote it."""
    from dataclasses import asdict

    return {k: v.isoformat() if isinstance(v, date) else v for k, v in asdict(config).items()}


def world_from_record(record: dict[str, object]) -> SyntheticConfig:
    """The ``SyntheticConfig`` that ``world_record`` wrote; raises ``ValueError`` when the record
    does not match this version's fields (a manifest from another generator version)."""
    from dataclasses import fields

    from pipelines.sources.synthetic import SyntheticConfig

    names = {f.name for f in fields(SyntheticConfig)}
    if set(record) != names:
        raise ValueError(
            f"the recorded world has fields {sorted(set(record) ^ names)} that this generator "
            "does not (or lacks ones it has): it was written by another version"
        )
    values = dict(record)
    values["start_date"] = date.fromisoformat(str(values["start_date"]))
    return SyntheticConfig(**values)
