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

The oracle also knows each member's taste vector, which a model can only infer from the member's
history. ``oracle_from_history`` (``inferred_taste=True``) is the oracle at the cut-off with
each member's taste replaced by its most probable value given their history before the cut-off
(``infer_taste``: the films they were drawn to and how much of each title they watched, under
the world's own choice and watch models, with every title's true vector known). It approximates
the best ranking knowable from the histories themselves (a point estimate, not the whole
posterior, and without the evidence of episode choices), so the report can say how much of what
a model could have learnt it did learn.

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
from dataclasses import dataclass, replace

import numpy as np
import torch

from pipelines import storage
from pipelines.evaluation.foundation import TokenFeatures
from pipelines.evaluation.splits import LeaveOneOutSplit, TemporalSplit
from pipelines.schemas import ACTIONS
from pipelines.settings import Settings
from pipelines.sources.oracle import WORLD_KEY, Oracle, world_from_record
from pipelines.sources.synthetic import EVENTS_SOURCE, MANIFEST_NAME, SyntheticConfig
from pipelines.tokens.interactions import WATCH_FRACTION_EDGES

UNPLAYED_ACTIONS: frozenset[str] = frozenset({"impressed", "listed"})
"""Token actions without a play: the generator's state (films seen, series progress) ignores them."""
_UNPLAYED_IDS = np.array(sorted(ACTIONS.index(a) for a in UNPLAYED_ACTIONS), dtype=np.int64)
_PAIRS_PER_BLOCK = 4_096  # (member, day) rows of the choice normaliser computed at once


def infer_taste(
    oracle: Oracle,
    members: np.ndarray,
    titles: np.ndarray,
    days: np.ndarray,
    watch_buckets: np.ndarray,
    max_iter: int = 50,
) -> np.ndarray:
    """(n_members, K) each member's most probable taste vector given their tokens, under the
    world's own models with every title's true vector, popularity and release date known.

    ``members`` and ``titles`` are world indices, ``days`` world days and ``watch_buckets`` the
    tokens' watch-fraction buckets (0 unknown, else 1..5 by ``WATCH_FRACTION_EDGES``), all (n,).
    The log posterior summed: the prior N(0, member_taste_scale²) per dimension; each film token
    as a draw from a softmax over the films out that day (plays, impressions and list adds are
    all draws from the choice model; given that a film was drawn, taste, popularity and
    freshness decide which; episodes are left out, since which of them can be drawn depends on
    series progress, and the rewatch penalty is left out of the normaliser); each watch-fraction
    bucket as where sigmoid(watch_bias + watch_slope * affinity + noise) fell. The choice
    normaliser is computed per (member, day) in blocks with its gradient by hand, so memory
    stays at a block of (member, day) rows x films however long the histories. Members without
    tokens keep the prior's mean, 0.
    """
    cfg, cat = oracle.config, oracle.catalogue
    scale = 1.0 / np.sqrt(cfg.latent_dim)
    factors = torch.tensor(cat.factors, dtype=torch.float64)  # (T, K)
    films = factors[: cat.n_films]  # (F, K)
    film = titles < cat.n_films
    chosen_member = torch.from_numpy(members[film])
    chosen = factors[titles[film]]  # (n_films_drawn, K)
    pairs, pair_count = np.unique(
        np.stack([members[film], days[film]]), axis=1, return_counts=True
    )  # (2, P), (P,)
    pair_days, pair_day = np.unique(pairs[1], return_inverse=True)
    base = torch.tensor(
        np.stack([oracle.day_logits(int(d))[: cat.n_films] for d in pair_days])
        if len(pair_days)
        else np.zeros((0, cat.n_films))
    )  # (D, F) popularity + freshness, -inf before release
    pair_member = torch.from_numpy(pairs[0])
    pair_day_t = torch.from_numpy(pair_day)
    count = torch.from_numpy(pair_count).double()
    watched = watch_buckets > 0
    fractions = np.asarray(WATCH_FRACTION_EDGES)
    # Bucket b holds watch fractions in [edge b-1, edge b): on the sigmoid's scale, logits.
    bounds = np.concatenate([[-np.inf], np.log(fractions / (1 - fractions)), [np.inf]])
    low = torch.tensor(bounds[watch_buckets[watched] - 1])  # (W,)
    high = torch.tensor(bounds[watch_buckets[watched]])
    watch_member = torch.from_numpy(members[watched])
    watch_title = factors[titles[watched]]  # (W, K)
    normal = torch.distributions.Normal(0.0, 1.0)
    variance = cfg.member_taste_scale**2

    taste = torch.zeros(oracle.members.n_members, cfg.latent_dim, dtype=torch.float64)
    taste.requires_grad_(True)

    def choice_terms(vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-log P(film tokens | taste) and its gradient, without autograd."""
        grad = torch.zeros_like(vectors)
        drawn = scale * (vectors[chosen_member] * chosen).sum(1)  # (n_films_drawn,)
        grad.index_add_(0, chosen_member, -scale * chosen)
        loss = -drawn.sum()
        for start in range(0, len(count), _PAIRS_PER_BLOCK):
            block = slice(start, start + _PAIRS_PER_BLOCK)
            who = pair_member[block]
            logits = scale * vectors[who] @ films.T + base[pair_day_t[block]]  # (B, F)
            weight = count[block]
            loss = loss + (weight * torch.logsumexp(logits, 1)).sum()
            expected = torch.softmax(logits, 1) @ films  # (B, K)
            grad.index_add_(0, who, (scale * weight)[:, None] * expected)
        return loss, grad

    optimizer = torch.optim.LBFGS(
        [taste], max_iter=max_iter, tolerance_grad=1e-6, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        with torch.no_grad():
            choice_loss, choice_grad = choice_terms(taste.detach())
        affinity = scale * (taste[watch_member] * watch_title).sum(1)  # (W,)
        mean = cfg.watch_bias + cfg.watch_slope * affinity
        inside = normal.cdf((high - mean) / cfg.watch_noise) - normal.cdf(
            (low - mean) / cfg.watch_noise
        )
        loss = (taste**2).sum() / (2 * variance) - torch.log(inside.clamp(min=1e-12)).sum()
        loss.backward()
        taste.grad += choice_grad
        return loss.detach() + choice_loss

    optimizer.step(closure)
    return taste.detach().numpy()


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
    """``world_source`` over the manifests under ``settings.landing_root`` (a local folder or a
    URI, as for ingestion)."""
    folder = storage.join(settings.landing_root, EVENTS_SOURCE)
    days = storage.list_folder(folder) if storage.is_dir(folder) else []
    paths = [
        storage.join(day.path, MANIFEST_NAME)
        for day in days
        if day.is_dir and day.name.startswith("date=")
    ]
    manifests = [json.loads(storage.read_text(p)) for p in paths if storage.exists(p)]
    return world_source(manifests, lake_days)


class OracleRecommender:
    """The generator's true choice model behind the ``MemberRecommender`` protocol."""

    def __init__(
        self,
        oracle: Oracle,
        features: TokenFeatures,
        at_cutoff: bool = False,
        inferred_taste: bool = False,
    ) -> None:
        """``features``: the token features of the interactions splits are cut from (their
        actions say which history tokens were plays). ``at_cutoff``: on a temporal split, do
        not know the popularity of titles released at or after the cut-off (see
        ``Oracle.unreleased_popularity_unknown``); named ``oracle_at_cutoff``.
        ``inferred_taste``: that, and each member's taste is what ``infer_taste`` makes of
        their training tokens instead of the true one; named ``oracle_from_history``."""
        self.world_oracle = oracle
        self.oracle = oracle
        self.features = features
        self.at_cutoff = at_cutoff or inferred_taste
        self.inferred_taste = inferred_taste
        self.name = (
            "oracle_from_history"
            if inferred_taste
            else "oracle_at_cutoff"
            if at_cutoff
            else "oracle"
        )
        self._item_to_title: np.ndarray | None = None  # (n_items,) oracle title index per item
        self._members: np.ndarray | None = None  # (n_users,) oracle member index per user

    @classmethod
    def from_config(
        cls, config: SyntheticConfig, features: TokenFeatures, **options: bool
    ) -> OracleRecommender:
        """The oracle of the world ``config`` describes; ``options`` as for ``__init__``."""
        return cls(Oracle.from_config(config), features, **options)

    def fit(self, split: LeaveOneOutSplit | TemporalSplit) -> None:
        """Map the split's item and user indices onto the world's; raises when the lake holds
        titles or members this world never had (the data is not from it)."""
        if self.at_cutoff:
            if not isinstance(split, TemporalSplit):
                raise ValueError(f"{self.name} needs a temporal split (its cut-off)")
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
        if self.inferred_taste:
            inferred = replace(self.oracle.members, factors=self._infer_taste(split))
            self.oracle = Oracle(self.oracle.config, self.oracle.catalogue, inferred)

    def _infer_taste(self, split: TemporalSplit) -> np.ndarray:
        """``infer_taste`` over the split's training tokens (everything before the cut-off)."""
        assert self._item_to_title is not None and self._members is not None
        every = self.features.interactions
        before = every.ts < split.config.cutoff_ts
        train = split.train
        if not (
            np.array_equal(every.item[before], train.item)
            and len(every.user_ids) == len(train.user_ids)
        ):
            raise ValueError(
                "the features belong to other interactions than the split: "
                "build both from one frame"
            )
        start = self.oracle.day_offset(dt.datetime.fromtimestamp(0, dt.UTC))  # world day at ts 0
        days = start + train.ts // 86_400
        return infer_taste(
            self.oracle,
            self._members[train.user],
            self._item_to_title[train.item],
            days,
            self.features.features[1, before],
        )

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
