"""The pretraining recipe: cut-off respected, a complete HF folder, beats most-popular, resumes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipelines.models import FoundationModel
from pipelines.models.windows import build_sequences, history_batch
from pipelines.schemas import ACTIONS, DEVICES
from pipelines.tokens.tokenizer import InteractionTokenizer
from pipelines.training.pretrain import PretrainResult, pretrain_foundation

CUTOFF = dt.date(2026, 1, 2)
N_TITLES, N_MEMBERS, LENGTH = 24, 64, 30
BEFORE_CUTOFF = 24  # tokens are an hour apart from midnight on Jan 1, so 24 fall before Jan 2
LATE_TITLE = "zz-late"  # only ever watched after the cut-off
TITLE_IDS = [f"t{i:02d}" for i in range(N_TITLES)]
GENRES = ["comedy", "drama", "thriller"]
FAST = {"max_steps": 40}  # ~2 s on two cores


def planted_tokens(seed: int = 0) -> pd.DataFrame:
    """Members watch titles in a cycle (next = previous + 1 mod N) from a random start; after
    the cut-off every member watches ``LATE_TITLE``. Popularity is flat, so most-popular is weak.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(N_MEMBERS):
        start = int(rng.integers(N_TITLES))
        for p in range(LENGTH):
            late = p >= BEFORE_CUTOFF
            rows.append(
                {
                    "user_id": f"u{u:03d}",
                    "position": p,
                    "title_id": LATE_TITLE if late else TITLE_IDS[(start + p) % N_TITLES],
                    "action": ACTIONS[int(rng.integers(len(ACTIONS)))],
                    "watch_fraction_bucket": int(rng.integers(6)),
                    "gap_bucket": int(rng.integers(16)),
                    "device": DEVICES[int(rng.integers(len(DEVICES)))],
                    "hour": p % 24,
                    "weekday": 3,
                    "ts": pd.Timestamp("2026-01-01") + pd.Timedelta(hours=p, seconds=u),
                }
            )
    return pd.DataFrame(rows)


def catalogue() -> pd.DataFrame:
    rows = [
        {
            "title_id": title,
            "name": title,
            "genres": [GENRES[i % 3]],
            "release_date": dt.date(2010 + i % 10, 1, 1),
            "runtime_seconds": 5400.0,
            "maturity": "PG",
            "series_id": None,
        }
        for i, title in enumerate(TITLE_IDS)
    ]
    rows.append({**rows[0], "title_id": LATE_TITLE, "release_date": dt.date(2026, 1, 5)})
    return pd.DataFrame(rows)


TOKENIZER = InteractionTokenizer.from_title_ids([*TITLE_IDS, LATE_TITLE])


def run(output_dir: Path, seed: int = 0) -> PretrainResult:
    return pretrain_foundation(
        planted_tokens(),
        catalogue(),
        TOKENIZER,
        CUTOFF,
        "tiny",
        "tiny",
        output_dir,
        seed=seed,
        train_overrides=FAST,
    )


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine lose a lot to them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pretrained(one_thread: None, tmp_path_factory: pytest.TempPathFactory) -> PretrainResult:
    return run(tmp_path_factory.mktemp("pretrain"))


def test_only_tokens_before_the_cutoff_are_trained_on(pretrained: PretrainResult) -> None:
    assert pretrained.members == N_MEMBERS
    # Each member's last pre-cut-off token is the validation target; the rest are trained on.
    assert pretrained.train_tokens == N_MEMBERS * (BEFORE_CUTOFF - 1)
    late = TOKENIZER.title_to_id(LATE_TITLE) - 64
    assert not bool(pretrained.model.title_trained[late])
    assert bool(pretrained.model.title_trained[:late].all())
    assert pretrained.trained_titles == N_TITLES
    # The late title is released after the cut-off: its age there is 0.
    assert float(pretrained.model.title_age_days[late]) == 0.0


def test_the_model_folder_is_a_complete_hugging_face_model(pretrained: PretrainResult) -> None:
    names = {p.name for p in pretrained.model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    loaded = FoundationModel.from_pretrained(pretrained.model_dir).eval()
    assert loaded.config.genres == GENRES
    assert InteractionTokenizer.load(pretrained.model_dir) == TOKENIZER
    history = planted_tokens()
    history = history[history["position"] < BEFORE_CUTOFF]
    sequences = build_sequences(history, {t: i for i, t in enumerate(TOKENIZER.title_ids)})
    batch = history_batch(sequences, list(range(8)))
    ids, scores = loaded.recommend(batch, k=5)
    expected_ids, expected_scores = pretrained.model.recommend(batch, k=5)
    assert torch.equal(ids, expected_ids)
    torch.testing.assert_close(scores, expected_scores)


def test_validation_beats_most_popular_on_planted_structure(pretrained: PretrainResult) -> None:
    validation = pretrained.validation
    assert validation["most_popular_hit_at_10"] < 0.6  # flat popularity: about 10 / 24
    assert validation["hit_at_10"] > validation["most_popular_hit_at_10"] + 0.3
    losses = [value for _, value in pretrained.history["train/loss"]]
    assert len(losses) == FAST["max_steps"]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert pretrained.history["val/hit_at_10"][-1][0] == FAST["max_steps"]
    assert pretrained.loss_curve.read_bytes()[:4] == b"\x89PNG"
    assert {"model.d_model", "train.max_steps", "train.seed"} <= set(pretrained.params())


def test_a_rerun_resumes_from_its_checkpoints_and_new_inputs_start_afresh(
    tmp_path: Path,
) -> None:
    first = run(tmp_path)
    again = run(tmp_path)  # the final checkpoint is there: nothing left to train
    assert "train/loss" not in again.history
    assert again.train.steps == FAST["max_steps"]
    for name, tensor in first.model.state_dict().items():
        torch.testing.assert_close(again.model.state_dict()[name], tensor, rtol=0, atol=0)

    reseeded = run(tmp_path, seed=1)  # other inputs: the old checkpoints are not resumed
    assert len(reseeded.history["train/loss"]) == FAST["max_steps"]


def test_no_tokens_before_the_cutoff_fails_loudly(tmp_path: Path) -> None:
    tokens = planted_tokens()
    with pytest.raises(ValueError, match="no interaction tokens before the cut-off"):
        pretrain_foundation(
            tokens, catalogue(), TOKENIZER, dt.date(2025, 12, 31), "tiny", "tiny", tmp_path
        )
