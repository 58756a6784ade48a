"""The synthetic world's oracle as an evaluation model, and how the evaluator finds that world.

On a lake built from ``pipelines.sources.synthetic`` the best any recommender can do is the
generator's own choice model, ``pipelines.sources.oracle.Oracle``: given the member, the day of
the decision and the titles the member started before, it knows every title's true logit.
``OracleRecommender`` ranks the whole catalogue by those logits for each evaluated member at the
time of the member's first target, so the report can say how close a model comes to the best
possible ranking. It also knows how popular a title released on the evaluated day will be, which
nothing before its release can tell; ``oracle_at_cutoff`` (``at_cutoff=True``) gives such titles
the catalogue's expected popularity instead: the best ranking knowable at the cut-off. Only
tokens the member played move the world's state (films seen, series progress); impressions and list adds are in the history the models read, but the generator did
not count them. It is a ``MemberRecommender``: its scores depend on who chooses and when.

The oracle exists only when the lake came from the generator with a known config. Each day's
landing manifest (``_injected.json``) records the generator's whole ``SyntheticConfig``;
``world_source`` accepts a world only when every day in the lake has a manifest and all of them
record the same world. Otherwise (MovieLens, another source, a mix, a landing written before the
config was recorded) there is no world, and the note says why, so the report leaves the oracle
row out instead of printing a number that means nothing.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.evaluation.foundation import TokenFeatures
from pipelines.evaluation.splits import LeaveOneOutSplit, TemporalSplit
from pipelines.schemas import ACTIONS
from pipelines.settings import Settings
from pipelines.sources.oracle import WORLD_KEY, Oracle, world_from_record
from pipelines.sources.synthetic import EVENTS_SOURCE, MANIFEST_NAME, SyntheticConfig

UNPLAYED_ACTIONS: frozenset[str] = frozenset({"impressed", "listed"})
"""Token actions without a play: the generator's state (films seen, series progress) ignores them."""
_UNPLAYED_IDS = np.array(sorted(ACTIONS.index(a) for a in UNPLAYED_ACTIONS), dtype=np.int64)


@dataclass(frozen=True)
class WorldSource:
    """The synthetic world the lake came from, or why there is none."""

    config: SyntheticConfig | None  # the generator's config; None when the source is not one world
    note: str  # what was found: the world's seed and size, or why the oracle is absent


def world_source(
    manifests: Iterable[Mapping[str, object]], lake_days: Iterable[dt.date]
) -> WorldSource:
    """The one world every day of ``lake_days`` was generated from, by their landing manifests.

    ``manifests`` are the parsed ``_injected.json`` files of the landing root (any days); a day
    of the lake without a manifest, a manifest without the recorded config, or two different
    configs give no world.
    """
    by_day = {str(m.get("date")): m for m in manifests}
    days = sorted(d.isoformat() for d in lake_days)
    if not days:
        return WorldSource(None, "oracle: not available, the lake holds no days to evaluate")
    missing = [d for d in days if d not in by_day]
    if len(missing) == len(days):
        return WorldSource(
            None,
            "oracle: not available, the landing folders have no synthetic generator manifest "
            "(MovieLens or another source): the true choice model is unknown",
        )
    if missing:
        return WorldSource(
            None,
            f"oracle: not available, days {', '.join(missing)} have no synthetic generator "
            "manifest while others do (a mix of sources has no single true choice model)",
        )
    records = [by_day[d].get(WORLD_KEY) for d in days]
    if any(r is None for r in records):
        return WorldSource(
            None,
            "oracle: not available, the synthetic manifests do not record the generator's "
            "config (written by an older generator): regenerate the landing data",
        )
    if any(r != records[0] for r in records):
        return WorldSource(
            None, "oracle: not available, the landing days were written by different worlds"
        )
    try:
        config = world_from_record(dict(records[0]))
    except ValueError as error:
        return WorldSource(None, f"oracle: not available, {error}")
    return WorldSource(
        config,
        f"oracle: the generator's true choice model (seed {config.seed}, {config.n_titles:,} "
        f"titles, {config.n_members:,} members, from {config.start_date})",
    )


def read_world_source(settings: Settings, lake_days: Iterable[dt.date]) -> WorldSource:
    """``world_source`` over the manifests under ``settings.landing_root``, a local folder as for
    ingestion (``pipelines.ingest.landing``)."""
    folder = Path(settings.landing_root) / EVENTS_SOURCE
    paths = sorted(folder.glob(f"date=*/{MANIFEST_NAME}"))
    return world_source([json.loads(p.read_text(encoding="utf-8")) for p in paths], lake_days)


class OracleRecommender:
    """The generator's true choice model behind the ``MemberRecommender`` protocol."""

    def __init__(self, oracle: Oracle, features: TokenFeatures, at_cutoff: bool = False) -> None:
        """``features``: the token features of the interactions splits are cut from (their
        actions say which history tokens were plays). ``at_cutoff``: on a temporal split, do
        not know the popularity of titles released at or after the cut-off (see
        ``Oracle.unreleased_popularity_unknown``); named ``oracle_at_cutoff``."""
        self.world_oracle = oracle
        self.oracle = oracle
        self.features = features
        self.at_cutoff = at_cutoff
        self.name = "oracle_at_cutoff" if at_cutoff else "oracle"
        self._item_to_title: np.ndarray | None = None  # (n_items,) oracle title index per item
        self._members: np.ndarray | None = None  # (n_users,) oracle member index per user

    @classmethod
    def from_config(
        cls, config: SyntheticConfig, features: TokenFeatures, at_cutoff: bool = False
    ) -> OracleRecommender:
        return cls(Oracle.from_config(config), features, at_cutoff)

    def fit(self, split: LeaveOneOutSplit | TemporalSplit) -> None:
        """Map the split's item and user indices onto the world's; raises when the lake holds
        titles or members this world never had (the data is not from it)."""
        if self.at_cutoff:
            if not isinstance(split, TemporalSplit):
                raise ValueError("oracle_at_cutoff needs a temporal split (its cut-off)")
            cutoff = dt.datetime.fromtimestamp(split.config.cutoff_ts, dt.UTC)
            world = self.world_oracle
            self.oracle = world.unreleased_popularity_unknown(world.day_offset(cutoff))
        titles = {t: i for i, t in enumerate(self.oracle.title_ids)}
        items = [str(i) for i in split.train.item_ids]
        strangers = [i for i in items if i not in titles]
        if strangers:
            raise ValueError(
                f"{len(strangers)} titles of the lake (e.g. {strangers[:3]}) are not in the "
                f"synthetic world of seed {self.oracle.config.seed}: the landing manifests "
                "describe another world than the one the lake was built from"
            )
        self._item_to_title = np.array([titles[i] for i in items], dtype=np.int64)
        try:
            members = [self.oracle.user_index(str(u)) for u in split.train.user_ids]
        except KeyError as error:
            raise ValueError(
                f"the lake holds a member the synthetic world lacks: {error}"
            ) from None
        self._members = np.asarray(members, dtype=np.int64)

    def score_members(
        self,
        users: np.ndarray,
        histories: list[np.ndarray],
        seen: list[np.ndarray],
        at_ts: np.ndarray,
    ) -> np.ndarray:
        """(B, n_items) true choice logits (-inf where a title cannot be chosen) at ``at_ts``."""
        if self._item_to_title is None or self._members is None:
            raise RuntimeError("call fit before score_members")
        oracle, catalogue = self.oracle, self.oracle.catalogue
        seen_films = np.zeros((len(users), catalogue.n_films), dtype=bool)
        progress = np.zeros((len(users), len(catalogue.series_ids)), dtype=np.int64)
        for b, (user, items) in enumerate(zip(users.tolist(), seen, strict=True)):
            actions = self.features.prefix(user, len(items), items)[0]  # (L,)
            played = self._item_to_title[items[~np.isin(actions, _UNPLAYED_IDS)]]
            films = played[played < catalogue.n_films]
            seen_films[b, films] = True
            episodes = played[played >= catalogue.n_films]
            # A member's next episode follows the furthest one started (state_from_history).
            np.maximum.at(
                progress[b], catalogue.series_index[episodes], catalogue.ordinal[episodes] + 1
            )
        days = np.array(
            [oracle.day_offset(dt.datetime.fromtimestamp(int(t), dt.UTC)) for t in at_ts],
            dtype=np.int64,
        )
        logits = oracle.logits(self._members[users], days, seen_films, progress)  # (B, T)
        return logits[:, self._item_to_title]  # (B, n_items)
