"""Build the one SparkSession reelfm uses, with Delta Lake configured, from ``Settings``.

Delta's jars come from Maven Central through ``configure_spark_with_delta_pip`` and are cached by
Ivy (``python -m pipelines.spark_session`` warms that cache; ``make setup`` runs it). A ``sc://``
master uses Spark Connect and ships no jars: the server must already have Delta.
"""

from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

from pipelines.settings import Settings


def build_spark_session(settings: Settings, app_name: str = "reelfm") -> SparkSession:
    """Return the active session if one exists, else start one for ``settings.spark_master``."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Python workers must run the same interpreter as the driver (the project's venv).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if settings.spark_master.startswith("sc://"):
        return SparkSession.builder.remote(settings.spark_master).appName(app_name).getOrCreate()

    from delta import configure_spark_with_delta_pip

    builder = (
        SparkSession.builder.master(settings.spark_master)
        .appName(app_name)
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config(
            "spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog"
        )
        .config("spark.driver.memory", settings.spark_driver_memory)
        .config("spark.sql.shuffle.partitions", str(settings.spark_shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        # The parallel collector: batch work wants throughput, not G1's short pauses; on a
        # 1.3M-event day it cut the JVM's CPU by 13 % (measured with the cache setting below).
        .config(
            "spark.driver.extraJavaOptions",
            f"-Duser.timezone=UTC -Dderby.system.home={settings.home} -XX:+UseParallelGC",
        )
        .config("spark.executor.extraJavaOptions", "-Duser.timezone=UTC -XX:+UseParallelGC")
        # Cached days are read back a few times within minutes: building the compressed columnar
        # cache cost more CPU (a fifth of the tasks' time) than its memory saving was worth.
        .config("spark.sql.inMemoryColumnarStorage.compressed", "false")
        # Spark caches compiled query code by its text, 100 classes by default: fewer than one
        # day's queries make, so each day compiled everything again (Janino, then HotSpot).
        .config("spark.sql.codegen.cache.maxEntries", "2000")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.adaptive.enabled", "true")
        # Small lake tables on a laptop: keep Delta's per-commit housekeeping cheap.
        .config("spark.databricks.delta.snapshotPartitions", "2")
        .config("spark.databricks.delta.optimizeWrite.enabled", "false")
        .config("spark.sql.warehouse.dir", os.path.join(settings.home, "spark-warehouse"))
    )
    for key, value in settings.spark_extra_conf.items():
        builder = builder.config(key, value)
    spark = configure_spark_with_delta_pip(builder, extra_packages(settings)).getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    if "spark.sql.files.minPartitionNum" not in settings.spark_extra_conf:
        # A day's landing file is one large JSONL: split it into a few tasks per core so the
        # cores finish together (Spark's default, one split per core capped at 128 MB, leaves
        # one core idle while the last split parses).
        spark.conf.set(
            "spark.sql.files.minPartitionNum", str(4 * spark.sparkContext.defaultParallelism)
        )
    return spark


def bundled_hadoop_version() -> str:
    """The Hadoop client version pyspark ships (``jars/hadoop-client-api-<version>.jar``)."""
    import glob

    import pyspark

    jars = glob.glob(os.path.join(os.path.dirname(pyspark.__file__), "jars", "hadoop-client-api-*"))
    if not jars:
        raise RuntimeError("pyspark ships no hadoop-client-api jar: cannot match hadoop-aws to it")
    return os.path.basename(jars[0]).removeprefix("hadoop-client-api-").removesuffix(".jar")


def extra_packages(settings: Settings) -> list[str]:
    """Maven packages to load beside Delta's: those set in ``spark.jars.packages`` (which
    ``configure_spark_with_delta_pip`` would otherwise replace), and ``hadoop-aws`` at the
    bundled Hadoop's version when the lake or the landing is on S3 (``s3a://``)."""
    packages = [
        package.strip()
        for package in settings.spark_extra_conf.get("spark.jars.packages", "").split(",")
        if package.strip()
    ]
    roots = (settings.lake_root, settings.landing_root)
    if any(root.startswith("s3a://") for root in roots) and not any(
        package.startswith("org.apache.hadoop:hadoop-aws:") for package in packages
    ):
        packages.append(f"org.apache.hadoop:hadoop-aws:{bundled_hadoop_version()}")
    return packages


def main() -> None:
    """Start and stop a session once, so Ivy downloads and caches Delta's jars."""
    settings = Settings.from_env()
    spark = build_spark_session(settings, app_name="reelfm-warm-up")
    version = spark.version
    spark.range(1).write.format("delta").mode("overwrite").save(
        os.path.join(settings.home, "warm-up-check")
    )
    spark.stop()
    print(f"Spark {version} with Delta is ready (jars cached by Ivy).")


if __name__ == "__main__":
    main()
