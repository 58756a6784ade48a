"""The day evaluation: the SASRec ablation repeats the registered version's recorded recipe, and
the registered version is scored with each member's own token features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipelines.evaluation.daily import PretrainedFoundation, load_model_exactly, sasrec_fit_config
from pipelines.evaluation.foundation import (
    FEATURE_ROWS,
    SASREC_OVERRIDES,
    FoundationRecommender,
    TokenFeatures,
)
from pipelines.evaluation.metrics import rank_targets
from pipelines.evaluation.splits import TemporalConfig, index_interactions, temporal_split
from pipelines.models import FoundationConfig, FoundationModel
from pipelines.schemas import ACTIONS


def test_sasrec_ablation_repeats_the_versions_recipe():
    recipe = {"model_preset": "tiny", "train_preset": "demo", "max_steps": "12", "seed": "3"}
    fit = sasrec_fit_config(recipe)
    assert (fit.name, fit.model_preset, fit.train_preset, fit.seed) == ("sasrec", "tiny", "demo", 3)
    assert dict(fit.train_overrides) == {"max_steps": 12}
    assert {k: fit.model_overrides[k] for k in SASREC_OVERRIDES} == SASREC_OVERRIDES
    # MLflow stores an unset max_steps as the string "None": the preset's own budget then.
    unset = sasrec_fit_config({**recipe, "max_steps": "None"})
    assert dict(unset.train_overrides) == {}


def test_sasrec_ablation_needs_a_recorded_recipe():
    with pytest.raises(LookupError, match="evaluate with sasrec disabled"):
        sasrec_fit_config({"seed": "0"})


def test_pretrained_version_scores_each_member_with_its_own_features():
    """Two members with the same titles but other actions: the by-history lookup of
    ``FoundationRecommender`` cannot tell them apart, scoring by member can; where the history is
    unambiguous both give the same scores."""
    day = 86_400
    frame = pd.DataFrame(
        [
            ("u1", "a", 0, "started"), ("u1", "b", 1, "started"), ("u1", "c", 2 * day, "started"),
            ("u2", "a", 0, "completed"), ("u2", "b", 1, "completed"), ("u2", "d", 2 * day, "started"),
            ("u3", "b", 0, "listed"), ("u3", "c", 1, "completed"), ("u3", "a", 2 * day, "started"),
        ],
        columns=["user_id", "title_id", "ts", "action"],
    )  # fmt: skip
    interactions = index_interactions(frame, catalogue=["a", "b", "c", "d", "e"])
    features = np.zeros((FEATURE_ROWS, len(frame)), dtype=np.int64)
    features[0] = frame["action"].map(ACTIONS.index).to_numpy()
    features = TokenFeatures.from_frame(frame, interactions, features)
    split = temporal_split(interactions, TemporalConfig(cutoff_ts=day))
    torch.manual_seed(0)
    config = FoundationConfig.from_preset("tiny", num_titles=5, use_metadata=False)
    model = FoundationModel(config).eval()
    with torch.no_grad():  # an untrained model starts with zero feature embeddings: stir them
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    item_to_title = np.arange(5)

    member = PretrainedFoundation(model, item_to_title, features)
    member.fit(split)
    ranked = rank_targets(member, split.test)
    assert np.isfinite(ranked.ranks).all()
    test = split.test
    scores = member.score_members(test.users, test.histories, test.exclude, test.target_ts[:, 0])
    assert not np.allclose(scores[0], scores[1])  # u1 and u2: same titles, other actions

    by_history = FoundationRecommender.from_pretrained(model, item_to_title, features)
    by_history.fit(split)
    with pytest.raises(ValueError, match="two members share"):
        by_history.score(test.histories[:1])
    np.testing.assert_allclose(scores[2:], by_history.score(test.histories[2:]), atol=1e-5)


def test_a_version_that_does_not_fit_the_model_code_fails_to_load(tmp_path):
    from safetensors.torch import load_file, save_file

    config = FoundationConfig.from_preset("tiny", num_titles=5, use_metadata=False)
    FoundationModel(config).save_pretrained(tmp_path)
    assert load_model_exactly(tmp_path).num_titles == 5
    weights = load_file(tmp_path / "model.safetensors")
    name = next(k for k in weights if k.startswith("title_id_embedding"))
    weights[f"renamed_{name}"] = weights.pop(name)  # as if the model code had renamed a module
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="do not fit the current FoundationModel"):
        load_model_exactly(tmp_path)
