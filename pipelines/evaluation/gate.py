"""The promotion gate: which registered model version consumers get as ``champion``.

Every newly evaluated version gets the ``challenger`` alias. It also takes ``champion`` when its
NDCG@10 is no worse than the current champion's by more than a tolerance (so evaluation noise
does not block a model that is as good, while a real regression never ships); the first version
of a model becomes champion. Scores are read from the version's tag (``ndcg_at_10``), else from
the metric of the run that produced it; the gate raises when neither exists, because comparing
against a made-up 0 would promote anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException


@dataclass(frozen=True)
class GateConfig:
    """What the gate compares and how much slack it allows."""

    metric: str = "ndcg_at_10"  # version tag, else run metric, holding each version's score
    tolerance: float = 0.001  # absolute drop below the champion's score still promoted
    champion_alias: str = "champion"  # alias consumers pull
    challenger_alias: str = "challenger"  # alias of the newest evaluated version


@dataclass(frozen=True)
class GateDecision:
    """What the gate did and why."""

    promoted: bool  # the challenger is now the champion
    champion_version: str  # the champion after the decision
    champion_ndcg: float  # its score
    challenger_version: str  # the version just evaluated
    challenger_ndcg: float  # its score
    previous_champion_version: str | None  # the champion before, None for a first version
    reason: str  # one sentence a person can read in the Dagster UI


def version_score(client: MlflowClient, name: str, version: str, metric: str) -> float:
    """The version's ``metric`` tag, else its run's ``metric``; raises when neither is recorded."""
    model_version = client.get_model_version(name, version)
    if metric in model_version.tags:
        value = float(model_version.tags[metric])
    elif model_version.run_id and metric in client.get_run(model_version.run_id).data.metrics:
        value = float(client.get_run(model_version.run_id).data.metrics[metric])
    else:
        raise ValueError(
            f"{name} version {version} has no '{metric}' tag and its run logged no '{metric}' "
            "metric; evaluate it (or pass the score) before gating"
        )
    if not math.isfinite(value):
        raise ValueError(f"{name} version {version} has a non-finite {metric}: {value}")
    return value


def _current_champion(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(error).lower():
            return None
        raise


def apply_gate(
    client: MlflowClient,
    name: str,
    version: str | int,
    score: float | None = None,
    config: GateConfig = GateConfig(),
) -> GateDecision:
    """Alias ``version`` of registered model ``name`` as challenger, and champion if it passes.

    ``score`` (the version's NDCG@10), when given, is first written to the version's
    ``config.metric`` tag so later gates compare against the same number.
    """
    version = str(version)
    if score is not None:
        if not math.isfinite(score):
            raise ValueError(f"score must be a finite number, got {score}")
        client.set_model_version_tag(name, version, config.metric, repr(float(score)))
    challenger = version_score(client, name, version, config.metric)
    client.set_registered_model_alias(name, config.challenger_alias, version)

    previous = _current_champion(client, name, config.champion_alias)
    if previous is None:
        promoted, champion_score = True, challenger
        reason = f"version {version} is the first evaluated version of {name}"
    elif previous == version:
        promoted, champion_score = True, challenger
        reason = f"version {version} is already the champion"
    else:
        champion_score = version_score(client, name, previous, config.metric)
        promoted = challenger >= champion_score - config.tolerance
        verdict = "within" if promoted else "worse than"
        reason = (
            f"{config.metric} {challenger:.4f} vs champion v{previous} {champion_score:.4f}: "
            f"{verdict} the tolerance {config.tolerance:g}"
        )
    if promoted:
        client.set_registered_model_alias(name, config.champion_alias, version)
    client.set_model_version_tag(name, version, "gate_decision", "promoted" if promoted else "held")
    client.set_model_version_tag(name, version, "gate_reason", reason)
    return GateDecision(
        promoted=promoted,
        champion_version=version if promoted else str(previous),
        champion_ndcg=challenger if promoted else champion_score,
        challenger_version=version,
        challenger_ndcg=challenger,
        previous_champion_version=previous,
        reason=reason,
    )
