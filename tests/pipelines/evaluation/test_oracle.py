"""The synthetic oracle as a recommender: it out-ranks most-popular on the world it knows, reads
only played tokens, and exists only when the landing manifests name one world."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.evaluation.baselines import MostPopular, MostPopularNew
from pipelines.evaluation.foundation import FEATURE_ROWS, TokenFeatures
from pipelines.evaluation.metrics import MemberRecommender, evaluate, rank_targets
from pipelines.evaluation.oracle import (
    OracleRecommender,
    infer_taste,
    read_world_source,
    world_source,
)
from pipelines.evaluation.splits import (
    TemporalConfig,
    TemporalSplit,
    index_interactions,
    temporal_split,
)
from pipelines.schemas import ACTIONS, EVENT_TYPES
from pipelines.sources.catalogue import build_catalogue
from pipelines.sources.members import build_members
from pipelines.sources.oracle import WORLD_KEY, Oracle, world_record
from pipelines.sources.synthetic import MANIFEST_NAME, PRESETS, generate, simulate

# A bigger tiny world (thousands of choices) so the metric gap is far above noise.
CONFIG = replace(PRESETS["tiny"], n_members=600, days=4, sessions_per_day_mean=1.0)
CUTOFF_DAY = CONFIG.start_date + dt.timedelta(days=3)
KEPT = {"play_start": "started", "impression": "impressed"}


def _tokens() -> pd.DataFrame:
    """One token per play_start ("started") and per impression ("impressed"), as the generator
    wrote them: real synthetic events, without the Spark pipeline in between."""
    titles = np.asarray(build_catalogue(CONFIG).title_ids, dtype=object)
    users = np.asarray(build_members(CONFIG).user_ids, dtype=object)
    frames = []
    for events in simulate(CONFIG):
        kinds = np.asarray(EVENT_TYPES, dtype=object)[events.event_type]
        keep = np.isin(kinds, list(KEPT))
        frames.append(
            pd.DataFrame(
                {
                    "user_id": users[events.user[keep]],
                    "title_id": titles[events.title[keep]],
                    "ts": events.ts_ms[keep] // 1000,
                    "action": [KEPT[k] for k in kinds[keep]],
                }
            )
        )
        if events.day == CONFIG.days - 1:
            break
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def world() -> tuple[TemporalSplit, TokenFeatures]:
    tokens = _tokens()
    interactions = index_interactions(tokens, catalogue=build_catalogue(CONFIG).title_ids)
    features = np.zeros((FEATURE_ROWS, len(tokens)), dtype=np.int64)
    features[0] = tokens["action"].map(ACTIONS.index).to_numpy()
    token_features = TokenFeatures.from_frame(tokens, interactions, features)
    cutoff = int(dt.datetime.combine(CUTOFF_DAY, dt.time(0), tzinfo=dt.UTC).timestamp())
    split = temporal_split(interactions, TemporalConfig(cutoff_ts=cutoff))
    assert len(split.test) > 200
    return split, token_features


def test_oracle_ranks_far_better_than_most_popular(world):
    split, features = world
    oracle = OracleRecommender.from_config(CONFIG, features)
    assert isinstance(oracle, MemberRecommender)
    oracle.fit(split)
    popular = MostPopular()
    popular.fit(split)
    truth = evaluate(oracle, split.test)
    floor = evaluate(popular, split.test)
    assert truth["n_cases"] == floor["n_cases"] == len(split.test)
    assert truth["ndcg_at_10"] > 1.5 * floor["ndcg_at_10"] > 0
    assert truth["hr_at_10"] > floor["hr_at_10"] + 0.1
    assert truth["mrr"] > floor["mrr"]


def test_oracle_state_counts_plays_only(world):
    """Marking every history token as an impression forgets the member's plays: series progress
    resets, so the next episode a member is watching loses its continue-the-series bonus."""
    split, features = world
    honest = OracleRecommender.from_config(CONFIG, features)
    honest.fit(split)
    blind_features = TokenFeatures(
        features.interactions, np.full_like(features.features, ACTIONS.index("impressed"))
    )
    blind = OracleRecommender.from_config(CONFIG, blind_features)
    blind.fit(split)
    good = rank_targets(honest, split.test).ranks
    bad = rank_targets(blind, split.test).ranks
    assert np.nanmean(good) < np.nanmean(bad)


def test_oracle_at_cutoff_forgets_only_the_popularity_of_titles_new_at_the_cutoff(world):
    split, features = world
    exact = OracleRecommender.from_config(CONFIG, features)
    knowable = OracleRecommender.from_config(CONFIG, features, at_cutoff=True)
    assert (exact.name, knowable.name) == ("oracle", "oracle_at_cutoff")
    for model in (exact, knowable):
        model.fit(split)
    cat = exact.oracle.catalogue
    new = cat.release_day >= CONFIG.days - 1  # released on the cut-off day (world day 3)
    assert 0 < new.sum() < len(new)
    before, after = cat.log_popularity, knowable.oracle.catalogue.log_popularity
    assert np.array_equal(after[~new], before[~new])
    weight = CONFIG.popularity_weight
    prior = np.log(np.mean(np.exp(weight * before))) / weight  # the catalogue's expected weight
    assert np.allclose(after[new], prior) and not np.allclose(before[new], prior)
    # Scores differ exactly on the titles new at the cut-off (by the popularity they lost).
    rows = slice(0, 50)
    args = (split.test.users[rows], split.test.histories[rows], split.test.exclude[rows])
    at = split.test.target_ts[rows, 0]
    a, b = exact.score_members(*args, at), knowable.score_members(*args, at)
    released = np.isfinite(a)
    changed = np.flatnonzero((a != b).any(axis=0))
    items_new = split.new_items[changed]
    assert len(changed) > 0 and items_new.all()
    assert np.array_equal(np.isfinite(b), released)
    with pytest.raises(ValueError, match="temporal split"):
        OracleRecommender.from_config(CONFIG, features, at_cutoff=True).fit(
            _leave_one_out_stub(split)
        )


def test_oracle_from_history_infers_each_members_taste_from_their_tokens(world):
    """Taste inferred from the tokens before the cut-off tracks the true taste (the more
    tokens, the closer), members without tokens keep the prior's 0, and the ranking it gives
    lies between the oracle at the cut-off (true taste) and the same oracle with no taste."""
    split, features = world
    inferred = OracleRecommender.from_config(CONFIG, features, inferred_taste=True)
    knowable = OracleRecommender.from_config(CONFIG, features, at_cutoff=True)
    assert inferred.name == "oracle_from_history" and inferred.at_cutoff
    inferred.fit(split)
    knowable.fit(split)
    truth = inferred.world_oracle.members.factors
    guess = inferred.oracle.members.factors
    assert guess.shape == truth.shape
    film = inferred._item_to_title[split.train.item] < inferred.oracle.catalogue.n_films
    per_member = np.bincount(inferred._members[split.train.user[film]], minlength=len(truth))
    never = per_member == 0  # no film token (the fixture's tokens carry no watch fractions)
    assert never.any() and np.all(guess[never] == 0)
    many = per_member >= np.quantile(per_member[~never], 0.75)
    few = ~never & (per_member <= np.quantile(per_member[~never], 0.25))

    def agreement(rows: np.ndarray) -> float:
        return float(np.mean([np.corrcoef(guess[i], truth[i])[0, 1] for i in np.flatnonzero(rows)]))

    assert agreement(many) > max(0.3, agreement(few))
    # Everything else stays the oracle at the cut-off's.
    assert np.array_equal(
        inferred.oracle.catalogue.log_popularity, knowable.oracle.catalogue.log_popularity
    )
    tasteless = OracleRecommender(
        Oracle(
            CONFIG,
            knowable.oracle.catalogue,
            replace(knowable.oracle.members, factors=np.zeros_like(truth)),
        ),
        features,
    )
    tasteless.fit(split)
    ndcg = {m.name: evaluate(m, split.test)["ndcg_at_10"] for m in (knowable, inferred)}
    ndcg["none"] = evaluate(tasteless, split.test)["ndcg_at_10"]
    assert ndcg["oracle_at_cutoff"] > ndcg["oracle_from_history"] > ndcg["none"]


def test_infer_taste_reads_how_much_of_a_title_was_watched():
    """Watch fractions alone (episodes, so no choice evidence) pull the taste towards a title
    watched to the end and away from one abandoned in its first tenth."""
    oracle = Oracle.from_config(CONFIG)
    cat = oracle.catalogue
    liked = cat.n_films  # an episode, and the episode least like it (another series)
    disliked = cat.n_films + int(np.argmin(cat.factors[cat.n_films :] @ cat.factors[liked]))
    taste = infer_taste(
        oracle,
        members=np.array([0, 0, 0, 1], dtype=np.int64),
        titles=np.array([liked, liked, disliked, liked], dtype=np.int64),
        days=np.zeros(4, dtype=np.int64),
        watch_buckets=np.array([5, 5, 1, 0]),  # member 1's token carries no watch fraction
    )
    affinity = taste[0] @ cat.factors[[liked, disliked]].T
    assert affinity[0] > 0 > affinity[1]
    assert np.all(taste[1] == 0) and np.all(taste[2:] == 0)


def _leave_one_out_stub(split: TemporalSplit) -> object:
    from pipelines.evaluation.splits import LeaveOneOutConfig, LeaveOneOutSplit

    return LeaveOneOutSplit(split.train, split.test, split.test, LeaveOneOutConfig())


def test_oracle_refuses_a_lake_from_another_world(world):
    split, features = world
    stranger = OracleRecommender.from_config(replace(CONFIG, n_titles=50), features)
    with pytest.raises(ValueError, match="not in the synthetic world"):
        stranger.fit(split)


def test_most_popular_new_puts_new_titles_first(world):
    split, _ = world
    new = np.zeros(split.n_items, dtype=bool)
    new[[3, 7]] = True
    baseline = MostPopularNew()
    baseline.fit(replace(split, new_items=new))
    scores = baseline.score([np.array([0])])[0]
    old = np.flatnonzero(~new)
    assert scores[[3, 7]].min() > scores[old].max()
    counts = MostPopular(baseline._popular.config)
    counts.fit(split)
    # Among the old titles the order is most-popular's.
    order = np.argsort(-scores[old], kind="stable")
    assert np.array_equal(order, np.argsort(-counts.score([np.array([0])])[0][old], kind="stable"))


def _manifest(day: dt.date, world: dict | None) -> dict:
    manifest = {"date": day.isoformat(), "seed": 7}
    if world is not None:
        manifest[WORLD_KEY] = world
    return manifest


def test_world_source_needs_every_lake_day_from_one_recorded_world():
    days = [CONFIG.start_date + dt.timedelta(days=i) for i in range(3)]
    record = world_record(CONFIG)
    found = world_source([_manifest(d, record) for d in days], days)
    assert found.config == CONFIG and "seed 7" in found.note
    # MovieLens (no manifest), a mix, an old generator, two worlds: no oracle, and a reason.
    cases = {
        "no synthetic generator manifest": [],
        "a mix of sources": [_manifest(d, record) for d in days[:2]],
        "older generator": [_manifest(d, None) for d in days],
        "different worlds": [_manifest(d, record) for d in days[:2]]
        + [_manifest(days[2], world_record(replace(CONFIG, seed=8)))],
    }
    for reason, manifests in cases.items():
        absent = world_source(manifests, days)
        assert absent.config is None
        assert reason in absent.note and absent.note.startswith("oracle: not available")


def test_generator_manifests_record_the_world(tmp_path: Path):
    generate(replace(PRESETS["tiny"], days=2), tmp_path)
    manifests = [json.loads(p.read_text()) for p in tmp_path.glob(f"events/*/{MANIFEST_NAME}")]
    days = [dt.date.fromisoformat(m["date"]) for m in manifests]
    assert world_source(manifests, days).config == replace(PRESETS["tiny"], days=2)


def test_read_world_source_from_the_landing_folders(settings):
    days = [PRESETS["tiny"].start_date + dt.timedelta(days=i) for i in range(2)]
    assert read_world_source(settings, days).config is None  # nothing landed yet
    generate(replace(PRESETS["tiny"], days=2), settings.landing_root)
    assert read_world_source(settings, days).config == replace(PRESETS["tiny"], days=2)
    later = days + [days[-1] + dt.timedelta(days=1)]  # a lake day the generator did not write
    assert "a mix of sources" in read_world_source(settings, later).note
