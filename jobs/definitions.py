"""The ``Definitions`` Dagster loads: every asset, the jobs over them, schedules and resources.

``dagster dev -m jobs.definitions`` (``make ui``) serves it; ``jobs.cli`` runs the same jobs
in-process for the demo and the tests.
"""

from __future__ import annotations

import dagster as dg

from assets import bronze, evaluation, models, sessions_and_tokens
from assets.partitions import daily_partitions
from assets.resources import LakeResource, TrackingResource

data_assets = [bronze.titles, bronze.events, sessions_and_tokens.sessions_and_tokens]

daily_data_job = dg.define_asset_job(
    "daily_data",
    selection=dg.AssetSelection.assets(*data_assets),
    partitions_def=daily_partitions,
    # One process, one Spark JVM for every step of a run (a JVM per step costs 10-20 s on 2 cores).
    executor_def=dg.in_process_executor,
    description="Landing files → bronze → silver sessions → gold interaction tokens, for one day.",
)

model_assets = [models.foundation]

foundation_training_job = dg.define_asset_job(
    "foundation_training",
    selection=dg.AssetSelection.assets(*model_assets),
    partitions_def=daily_partitions,
    executor_def=dg.in_process_executor,  # one Spark JVM; training runs in the same process
    description="Pretrain the foundation model on interaction tokens strictly before the day; "
    "register a reelfm-foundation version (alias challenger).",
)

evaluation_assets = [evaluation.eval_report]

evaluation_job = dg.define_asset_job(
    "evaluation",
    selection=dg.AssetSelection.assets(*evaluation_assets),
    partitions_def=daily_partitions,
    executor_def=dg.in_process_executor,
    description="Score the day's reelfm-foundation version on the day's tokens against most-popular "
    "and ALS; write the report; move challenger/champion through the gate.",
)

nightly_data_schedule = dg.build_schedule_from_partitioned_job(
    daily_data_job, hour_of_day=2, minute_of_hour=0, name="nightly_data"
)


def build_resources() -> dict[str, dg.ConfigurableResource]:
    """The embedded default: every location comes from ``Settings.from_env()``."""
    return {"lake": LakeResource(), "tracking": TrackingResource()}


defs = dg.Definitions(
    assets=[*data_assets, *model_assets, *evaluation_assets],
    jobs=[daily_data_job, foundation_training_job, evaluation_job],
    schedules=[nightly_data_schedule],
    resources=build_resources(),
)
