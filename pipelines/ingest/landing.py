"""Read one day's landing files as rows that remember where they came from.

Every rejected record must be traced back to its file and line. JSON lines are read as text (never
dropped by a JSON reader) with the file path, the byte offset of the split they were read in and
their order inside it; ``attach_line_numbers`` turns those into 1-based line numbers for the few
rows that need one, without a sort of the whole day.

Parquet landing files (``.parquet``) are typed, so they are read as they are, with no text
parsing: ``LANDING_PARQUET_SCHEMA`` is their contract (the JSONL keys; ``event_ts`` a timestamp,
the numbers doubles, every field nullable so a missing one is a null the rules reject). Each row
gets ``_block`` 0 and its 0-based row index in the file as ``_row``, so line numbers (1-based row
numbers for Parquet) and "first copy wins" work the same for both formats, even in a day that
mixes them. A file whose column types cannot be read as the contract's fails the day with a
message naming the file and column: a typed file breaks its contract as a whole, not row by row.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ByteType,
    DataType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    ShortType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)
from pyspark.sql.window import Window

from pipelines import storage
from pipelines.schemas import LANDING_EVENT_FIELDS

JSONL_SUFFIXES: tuple[str, ...] = (".jsonl", ".json")
"""Landing files read as JSON lines."""
PARQUET_SUFFIXES: tuple[str, ...] = (".parquet",)
"""Landing files read as typed Parquet rows."""

_NUMERIC_FIELDS = ("watch_seconds", "position_seconds", "rating")
LANDING_PARQUET_SCHEMA = StructType(
    [
        StructField(
            name,
            TimestampType()
            if name == "event_ts"
            else DoubleType()
            if name in _NUMERIC_FIELDS
            else StringType(),
            True,
        )
        for name in LANDING_EVENT_FIELDS
    ]
)
"""The typed landing event row (``synthetic.landing_parquet_schema`` writes it).

Files may also carry integer or float32 numbers and timestamps of any unit but nanoseconds, with
or without a time zone (without one, read as UTC); they are cast to these types on read."""


@dataclass(frozen=True)
class LandingFiles:
    """The files found for one source and day."""

    folder: str
    paths: tuple[str, ...]

    @property
    def jsonl(self) -> tuple[str, ...]:
        """The JSON-lines files among ``paths``."""
        return tuple(p for p in self.paths if p.endswith(JSONL_SUFFIXES))

    @property
    def parquet(self) -> tuple[str, ...]:
        """The Parquet files among ``paths``."""
        return tuple(p for p in self.paths if p.endswith(PARQUET_SUFFIXES))


def list_landing_files(
    folder: str, suffixes: tuple[str, ...] = JSONL_SUFFIXES + PARQUET_SUFFIXES
) -> LandingFiles:
    """Data files in ``folder``, a local path or a URI (``pipelines.storage``); hidden and
    ``_``-prefixed files such as manifests are skipped."""
    try:
        entries = storage.list_folder(folder)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"No landing folder {folder}: generate or import data for this day first "
            "(`python -m pipelines.sources.synthetic --help` or `python -m pipelines.sources.movielens --help`)."
        ) from None
    paths = tuple(
        entry.path
        for entry in entries
        if not entry.is_dir
        and entry.name.endswith(suffixes)
        and not entry.name.startswith(("_", "."))
    )
    return LandingFiles(folder=folder, paths=paths)


def read_landing_lines(spark: SparkSession, files: LandingFiles | Iterable[str]) -> DataFrame:
    """One row per physical line: ``raw``, ``source_file``, ``_block``, ``_row`` (order in its split).

    Spark keeps each line's bytes as they are (``raw`` is not decoded, only wrapped); the
    validation rules reject a line that is not valid UTF-8 (instead of failing the whole file),
    and ``bronze/events_rejected`` stores it twice: ``raw`` with the bad bytes replaced by U+FFFD
    so every engine can read it, and ``raw_bytes`` with the line's exact bytes (line terminator
    excluded).
    """
    paths = files.paths if isinstance(files, LandingFiles) else tuple(files)
    return spark.read.text(list(paths)).select(
        F.col("value").alias("raw"),
        F.col("_metadata.file_path").alias("source_file"),
        F.col("_metadata.file_block_start").alias("_block"),
        F.monotonically_increasing_id().alias("_row"),
    )


def _parquet_read_type(path: str, name: str, arrow_type) -> DataType:
    """The Spark type to read column ``name`` of ``path`` as (then cast to the contract's)."""
    import pyarrow as pa

    want = LANDING_PARQUET_SCHEMA[name].dataType
    t = arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type
    if isinstance(want, StringType) and (pa.types.is_string(t) or pa.types.is_large_string(t)):
        return StringType()
    if isinstance(want, TimestampType) and pa.types.is_timestamp(t) and t.unit != "ns":
        return TimestampType()
    if isinstance(want, DoubleType):
        numeric = {
            pa.float64(): DoubleType(),
            pa.float32(): FloatType(),
            pa.int64(): LongType(),
            pa.int32(): IntegerType(),
            pa.int16(): ShortType(),
            pa.int8(): ByteType(),
        }
        if t in numeric:
            return numeric[t]
    raise ValueError(
        f"Parquet landing file {path}: column {name!r} is {arrow_type}, which cannot be read as "
        f"the landing contract's {want.simpleString()} (pipelines.ingest.landing."
        "LANDING_PARQUET_SCHEMA); fix the producer or convert the file. Nothing was ingested."
    )


def parquet_read_schemas(paths: Iterable[str]) -> dict[StructType, tuple[str, ...]]:
    """Group Parquet files by the Spark schema that reads their contract columns (footers only).

    Columns a file lacks are read as nulls (a missing field, rejected row by row); columns
    outside the contract are ignored, as unknown JSON keys are. Raises ``ValueError`` for a
    column whose type cannot be read as the contract's.
    """
    import pyarrow.parquet as pq

    groups: dict[StructType, list[str]] = {}
    for path in paths:
        with storage.open_binary(path) as handle:  # the footer only, on any filesystem
            arrow = pq.read_schema(handle)
        present = {field.name: field.type for field in arrow}
        schema = StructType(
            [
                StructField(
                    f.name,
                    _parquet_read_type(path, f.name, present[f.name])
                    if f.name in present
                    else f.dataType,
                    True,
                )
                for f in LANDING_PARQUET_SCHEMA.fields
            ]
        )
        groups.setdefault(schema, []).append(path)
    return {schema: tuple(group) for schema, group in groups.items()}


def read_landing_parquet(spark: SparkSession, paths: Iterable[str]) -> DataFrame:
    """One row per Parquet row: the typed landing fields, ``source_file``, ``_block``, ``_row``.

    ``_block`` is 0 and ``_row`` the row's 0-based index in its file, so ``attach_line_numbers``
    gives the 1-based row number, and ordering by (``source_file``, ``_block``, ``_row``) is file
    order as for JSON lines. Files are read with one scan per distinct column typing (one, for
    files from one producer), each cast to ``LANDING_PARQUET_SCHEMA``.
    """
    frames = []
    for schema, group in parquet_read_schemas(paths).items():
        frames.append(
            spark.read.schema(schema)
            .parquet(*group)
            .select(
                *[
                    F.col(f.name).cast(f.dataType).alias(f.name)
                    if schema[f.name].dataType != f.dataType
                    else F.col(f.name)
                    for f in LANDING_PARQUET_SCHEMA.fields
                ],
                F.col("_metadata.file_path").alias("source_file"),
                F.lit(0).cast("long").alias("_block"),
                F.col("_metadata.row_index").alias("_row"),
            )
        )
    if not frames:
        raise ValueError("read_landing_parquet needs at least one Parquet file")
    result = frames[0]
    for frame in frames[1:]:
        result = result.unionByName(frame)
    return result


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
