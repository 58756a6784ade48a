"""The oracle is the generator's own choice model: rebuilt from (config, seed) it explains the data.

Each ``play_start`` is one draw from the oracle's distribution given the member's earlier
``play_start`` titles. Summed over all draws, the oracle's probabilities give the expected count
of each title; a Pearson chi-square compares them with the observed counts. The same test run
with the oracle of a different seed must fail, which shows the test can tell.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from pipelines.sources.oracle import Oracle
from pipelines.sources.synthetic import PRESETS, SyntheticConfig, generate

# More days and sessions than tiny: a few thousand choices over 100 titles.
CONFIG = replace(PRESETS["tiny"], days=6, sessions_per_day_mean=1.2)


def choices(root: Path) -> list[tuple[str, datetime, str]]:
    """(user_id, at, title_id) of every play_start, in time order."""
    out = []
    for part in sorted(root.glob("events/date=*/part-*.jsonl")):
        for line in part.read_text().splitlines():
            e = json.loads(line)
            if e["event_type"] == "play_start":
                at = datetime.fromisoformat(e["event_ts"].replace("Z", "+00:00"))
                out.append((e["user_id"], at, e["title_id"]))
    return sorted(out, key=lambda c: c[1])


def expected_and_observed(
    oracle: Oracle, made: list[tuple[str, datetime, str]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    index = {t: i for i, t in enumerate(oracle.title_ids)}
    history: dict[str, list[str]] = {}
    expected = np.zeros(len(index))
    observed = np.zeros(len(index))
    p_chosen = []
    for user, at, title in made:
        probs = oracle.next_title_probs(user, at, history.get(user, []))
        expected += probs
        observed[index[title]] += 1
        p_chosen.append(probs[index[title]])
        history.setdefault(user, []).append(title)
    return expected, observed, np.array(p_chosen)


def chi_square_z(expected: np.ndarray, observed: np.ndarray) -> float:
    """Pearson chi-square as a z-score; titles expected < 5 times are pooled into one bin."""
    big = expected >= 5
    exp, obs = expected[big], observed[big]
    if not big.all():
        exp = np.append(exp, expected[~big].sum())
        obs = np.append(obs, observed[~big].sum())
    stat = float((((obs - exp) ** 2) / exp).sum())
    dof = len(exp) - 1
    return (stat - dof) / np.sqrt(2 * dof)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, datetime, str]]:
    root = tmp_path_factory.mktemp("oracle")
    generate(CONFIG, root)
    return choices(root)


def test_oracle_explains_the_generated_choices(made: list[tuple[str, datetime, str]]) -> None:
    assert len(made) > 2_000
    expected, observed, p_chosen = expected_and_observed(Oracle.from_config(CONFIG), made)
    assert p_chosen.min() > 0, "a title was chosen that the oracle says is impossible"
    assert chi_square_z(expected, observed) < 4.0
    total_variation = 0.5 * np.abs(expected - observed).sum() / len(made)
    assert total_variation < 0.08


def test_a_wrong_world_does_not_explain_them(made: list[tuple[str, datetime, str]]) -> None:
    wrong: SyntheticConfig = replace(CONFIG, taste_weight=0.0, popularity_weight=0.0)
    expected, observed, _ = expected_and_observed(Oracle.from_config(wrong), made)
    assert chi_square_z(expected, observed) > 10.0


def test_most_active_member_matches_their_own_oracle(
    made: list[tuple[str, datetime, str]],
) -> None:
    users = [u for u, _, _ in made]
    top = max(set(users), key=users.count)
    mine = [c for c in made if c[0] == top]
    expected, observed, p_chosen = expected_and_observed(Oracle.from_config(CONFIG), mine)
    assert len(mine) >= 40
    # Log-likelihood of the member's real choices beats that of uniform guessing by far.
    released = np.count_nonzero(expected > 0)
    assert np.log(p_chosen).mean() > np.log(1 / released) + 1.0
    assert 0.5 * np.abs(expected - observed).sum() / len(mine) < 0.35


def test_two_level_sampler_draws_from_the_softmax() -> None:
    from pipelines.sources.oracle import softmax
    from pipelines.sources.synthetic import _sample_rows

    rng = np.random.default_rng(0)
    logits = 2.0 * rng.normal(size=(3, 150))  # 150 titles: two full blocks and a ragged one
    logits[:, rng.random(150) < 0.3] = -np.inf
    logits[1, :64] = -np.inf  # a whole block masked
    repeats = 40_000
    draws = _sample_rows(np.tile(logits, (repeats, 1)), rng.random((3 * repeats, 2)))
    for r, probs in enumerate(softmax(logits)):
        drawn = draws[r::3].ravel()
        assert np.isfinite(logits[r, drawn]).all(), "a masked title was sampled"
        empirical = np.bincount(drawn, minlength=150) / len(drawn)
        assert 0.5 * np.abs(empirical - probs).sum() < 0.02
