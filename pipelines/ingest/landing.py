"""Read one day's landing files as raw lines that remember where they came from.

Every rejected record must be traced back to its file and line, so lines are read as text (never
dropped by a JSON reader) with the file path, the byte offset of the split they were read in and
their order inside it; ``attach_line_numbers`` turns those into 1-based line numbers for the few
rows that need one, without a sort of the whole day.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window


@dataclass(frozen=True)
class LandingFiles:
    """The files found for one source and day."""

    folder: str
    paths: tuple[str, ...]


def list_landing_files(
    folder: str, suffixes: tuple[str, ...] = (".jsonl", ".json")
) -> LandingFiles:
    """Data files in ``folder`` (hidden and ``_``-prefixed files such as manifests are skipped)."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"No landing folder {folder}: generate or import data for this day first "
            "(`python -m pipelines.sources.synthetic --help` or `python -m pipelines.sources.movielens --help`)."
        )
    names = sorted(
        name
        for name in os.listdir(folder)
        if name.endswith(suffixes) and not name.startswith(("_", "."))
    )
    return LandingFiles(folder=folder, paths=tuple(os.path.join(folder, name) for name in names))


def read_landing_lines(spark: SparkSession, files: LandingFiles) -> DataFrame:
    """One row per physical line: ``raw``, ``source_file``, ``_block``, ``_row`` (order in its split).

    Spark keeps each line's bytes as they are; the validation rules reject a line that is not
    valid UTF-8 (instead of failing the whole file), and ``bronze/events_rejected`` stores it with
    the bad bytes replaced by U+FFFD so every engine can read the table.
    """
    return spark.read.text(list(files.paths)).select(
        F.col("value").alias("raw"),
        F.col("_metadata.file_path").alias("source_file"),
        F.col("_metadata.file_block_start").alias("_block"),
        F.monotonically_increasing_id().alias("_row"),
    )


def attach_line_numbers(rows: DataFrame, lines: DataFrame) -> DataFrame:
    """Add ``line_number`` (1-based, within ``source_file``) to a subset ``rows`` of ``lines``.

    ``lines`` holds every line of the day (``source_file``, ``_block``, ``_row``) and is read only
    to count rows per file split. Pass the rows ``rows`` was derived from (bronze passes its cached,
    classified lines) or an identical scan plan, so that ``_row`` ids line up.
    """
    blocks = lines.groupBy("source_file", "_block").agg(
        F.count(F.lit(1)).alias("_block_lines"), F.min("_row").alias("_block_first_row")
    )
    by_file = Window.partitionBy("source_file").orderBy("_block")
    blocks = blocks.withColumn(
        "_lines_before",
        F.coalesce(
            F.sum("_block_lines").over(by_file.rowsBetween(Window.unboundedPreceding, -1)), F.lit(0)
        ),
    )
    return (
        rows.join(F.broadcast(blocks), ["source_file", "_block"], "left")
        .withColumn(
            "line_number",
            (F.col("_row") - F.col("_block_first_row") + F.col("_lines_before") + 1).cast("long"),
        )
        .drop("_block_lines", "_block_first_row", "_lines_before")
    )
