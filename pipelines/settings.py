"""Everything configurable about where reelfm runs, in one frozen object read from the environment.

The embedded default (a laptop, CI) needs no variable at all: data, the MLflow store and the
Dagster instance live under ``REELFM_HOME`` (default ``./.reelfm``). A cluster swaps each part by
setting the matching variable; no code path branches on "local" versus "cluster".
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _is_server(tracking_uri: str) -> bool:
    """Whether MLflow's tracking URI names a server (rather than a store on this machine)."""
    return tracking_uri.startswith(("http://", "https://", "databricks"))


@dataclass(frozen=True)
class Settings:
    """Where things live and how big the local engines are. Build it with ``Settings.from_env()``."""

    home: str
    """Root of everything reelfm writes on the embedded default (``REELFM_HOME``)."""
    lake_root: str
    """Root of the Delta lake; tables live at ``<lake_root>/<layer>/<table>`` (``REELFM_LAKE_ROOT``)."""
    landing_root: str
    """Where sources drop raw files, one folder per day (``REELFM_LANDING_ROOT``)."""
    spark_master: str
    """``local[*]``, ``spark://…``, ``k8s://…`` (``REELFM_SPARK_MASTER``); ``sc://…`` uses Spark Connect."""
    spark_driver_memory: str
    """Driver heap; on ``local[*]`` this is the whole engine (``REELFM_SPARK_DRIVER_MEMORY``)."""
    spark_shuffle_partitions: int
    """``spark.sql.shuffle.partitions``; small on a laptop, large on a cluster (``REELFM_SPARK_SHUFFLE_PARTITIONS``)."""
    spark_extra_conf: dict[str, str] = field(default_factory=dict)
    """Any further ``spark.*`` setting, from variables named ``REELFM_SPARK_CONF__<key with _ for .>``."""
    mlflow_tracking_uri: str = ""
    """MLflow tracking store (``MLFLOW_TRACKING_URI``); default a SQLite file under home."""
    mlflow_artifact_root: str = ""
    """Where MLflow runs keep artifacts when the experiment is created here
    (``REELFM_MLFLOW_ARTIFACT_ROOT``); default beside the embedded store, and for a tracking
    server empty: the server's own artifact store."""
    mlflow_experiment: str = "reelfm"
    """MLflow experiment every materialization logs to (``REELFM_MLFLOW_EXPERIMENT``)."""
    dagster_home: str = ""
    """Dagster instance folder (``DAGSTER_HOME``); default ``<home>/dagster``."""
    train_processes: int = 1
    """Training processes on this machine (``REELFM_TRAIN_PROCESSES``); above 1, ``torchrun`` DDP."""

    @staticmethod
    def from_env() -> Settings:
        home = _env("REELFM_HOME", "./.reelfm")
        if "://" in home:
            # Checkpoints, reports and the embedded stores are local files; a URI here would
            # silently become a folder named "s3a:" under the working directory.
            raise ValueError(
                f"REELFM_HOME={home!r} must be a local folder (checkpoints, reports, the "
                "embedded MLflow and Dagster stores). Put the data on object storage with "
                "REELFM_LAKE_ROOT and REELFM_LANDING_ROOT instead."
            )
        home = str(Path(home).expanduser().resolve())
        extra = {
            key[len("REELFM_SPARK_CONF__") :].replace("_", ".").replace("..", "_"): value
            for key, value in os.environ.items()
            if key.startswith("REELFM_SPARK_CONF__")
        }
        tracking_uri = _env("MLFLOW_TRACKING_URI", "sqlite:///" + os.path.join(home, "mlflow.db"))
        return Settings(
            home=home,
            lake_root=_env("REELFM_LAKE_ROOT", os.path.join(home, "lake")),
            landing_root=_env("REELFM_LANDING_ROOT", os.path.join(home, "landing")),
            spark_master=_env("REELFM_SPARK_MASTER", "local[*]"),
            spark_driver_memory=_env("REELFM_SPARK_DRIVER_MEMORY", "3g"),
            spark_shuffle_partitions=int(_env("REELFM_SPARK_SHUFFLE_PARTITIONS", "4")),
            spark_extra_conf=extra,
            mlflow_tracking_uri=tracking_uri,
            # A tracking server keeps artifacts where it is configured to (its proxied
            # --artifacts-destination): a local default would leave them on this machine,
            # out of reach of every other client of the registry.
            mlflow_artifact_root=_env(
                "REELFM_MLFLOW_ARTIFACT_ROOT",
                "" if _is_server(tracking_uri) else os.path.join(home, "mlartifacts"),
            ),
            mlflow_experiment=_env("REELFM_MLFLOW_EXPERIMENT", "reelfm"),
            dagster_home=_env("DAGSTER_HOME", os.path.join(home, "dagster")),
            train_processes=int(_env("REELFM_TRAIN_PROCESSES", "1")),
        )

    def with_home(self, home: str | os.PathLike[str]) -> Settings:
        """The same settings rooted somewhere else (tests use a temporary folder)."""
        home = str(Path(home).resolve())
        return replace(
            self,
            home=home,
            lake_root=os.path.join(home, "lake"),
            landing_root=os.path.join(home, "landing"),
            mlflow_tracking_uri="sqlite:///" + os.path.join(home, "mlflow.db"),
            mlflow_artifact_root=os.path.join(home, "mlartifacts"),
            dagster_home=os.path.join(home, "dagster"),
        )

    def table_path(self, layer: str, table: str) -> str:
        """``<lake_root>/<layer>/<table>``, e.g. ``table_path("bronze", "events")``."""
        return f"{self.lake_root.rstrip('/')}/{layer}/{table}"

    def landing_path(self, source: str, day: str) -> str:
        """Folder a source drops one day's files into: ``<landing_root>/<source>/date=<day>``."""
        return f"{self.landing_root.rstrip('/')}/{source}/date={day}"
