"""Import the public GroupLens MovieLens datasets as reelfm landing files.

MovieLens is the project's real benchmark data, so this module reads the files exactly as
GroupLens publishes them (plain or gzipped): ml-100k (``u.data``, ``u.item``, ``u.user``),
ml-1m and ml-10m (``ratings.dat``, ``movies.dat``, ``users.dat``, ``::``-separated, latin-1) and
the CSV family ml-latest, ml-latest-small, ml-20m, ml-25m, ml-32m (``ratings.csv``,
``movies.csv``). Each rating becomes one ``rate`` landing event and the movie list becomes the
titles catalogue, written as JSONL into the same day folders every other source uses, so bronze
ingestion needs no MovieLens special case.

Run it with ``python -m pipelines.sources.movielens import DATASET_DIR --landing-root ROOT``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import io
import json
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines import storage
from pipelines.schemas import BRONZE_TITLES, LANDING_EVENT_FIELDS
from pipelines.settings import Settings

FORMATS: tuple[str, ...] = ("ml-100k", "ml-1m", "ml-latest")
"""File layouts ``detect_format`` tells apart; ml-10m shares ml-1m's, ml-20m/25m/32m ml-latest's."""

# The files that identify each layout, in the order detect_format tries them.
_FORMAT_MARKERS: dict[str, tuple[str, ...]] = {
    "ml-100k": ("u.data", "u.item"),
    "ml-1m": ("ratings.dat", "movies.dat", "users.dat"),
    "ml-latest": ("ratings.csv", "movies.csv"),
}

ML100K_GENRES: tuple[str, ...] = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
"""The 19 genre flags at the end of a ``u.item`` line, in ``u.genre`` order."""

ML1M_OCCUPATIONS: tuple[str, ...] = (
    "other",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
)
"""ml-1m ``users.dat`` occupation codes 0..20 (from its README); ml-100k stores the names itself."""

RATINGS_COLUMNS: tuple[str, ...] = ("user_id", "title_id", "rating", "ts")
USERS_COLUMNS: tuple[str, ...] = ("user_id", "gender", "age", "occupation", "zip")
TITLES_COLUMNS: tuple[str, ...] = tuple(f.name for f in BRONZE_TITLES.fields)

_NO_GENRES = "(no genres listed)"
# "Toy Story (1995)", "Babylon 5 (1994) " and "Death Note: Desu nôto (2006–2007)" all end in a year.
_TITLE_YEAR = re.compile(r"\((\d{4})(?:[-–]\d{0,4})?\)\s*$")
_ML100K_DATE_FORMAT = "%d-%b-%Y"  # u.item release dates look like 01-Jan-1995
_SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class ImportSummary:
    """What ``write_landing`` wrote."""

    dataset_format: str
    """One of ``FORMATS``."""
    events: int
    """``rate`` events written (one per rating inside the day limit)."""
    days: int
    """Day folders written under ``<landing_root>/events``."""
    titles: int
    """Titles written to the catalogue file."""
    first_day: str
    """UTC date (ISO) of the earliest event; the catalogue lands in this day's folder."""
    last_day: str
    """UTC date (ISO) of the latest event written."""


def _find_file(dataset_dir: Path, name: str) -> Path | None:
    for candidate in (dataset_dir / name, dataset_dir / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _require_file(dataset_dir: Path, name: str) -> Path:
    path = _find_file(dataset_dir, name)
    if path is None:
        raise FileNotFoundError(
            f"{dataset_dir} has neither {name} nor {name}.gz; point at an unpacked GroupLens "
            "MovieLens folder that contains it"
        )
    return path


def _read_bytes(path: Path) -> bytes:
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as f:
            return f.read()
    return path.read_bytes()


def _read_lines(path: Path, encoding: str) -> list[str]:
    """Non-empty lines of a text file; u.genre and some copies end with a blank line."""
    text = _read_bytes(path).decode(encoding)
    return [line for line in text.splitlines() if line.strip()]


def detect_format(dataset_dir: Path) -> str:
    """Which MovieLens layout ``dataset_dir`` holds: ``"ml-100k"``, ``"ml-1m"`` or ``"ml-latest"``.

    Raises ``ValueError`` when none of the identifying files (plain or ``.gz``) is there.
    """
    dataset_dir = Path(dataset_dir)
    for fmt, markers in _FORMAT_MARKERS.items():
        if any(_find_file(dataset_dir, name) is not None for name in markers):
            return fmt
    expected = ", ".join(name for markers in _FORMAT_MARKERS.values() for name in markers)
    raise ValueError(
        f"{dataset_dir} is not a MovieLens dataset folder: expected one of {expected} "
        "(optionally .gz)"
    )


def _read_ratings_numeric(dataset_dir: Path) -> pd.DataFrame:
    """Ratings with integer ids: compact for ml-32m's 32 million rows; digits need no escaping."""
    fmt = detect_format(dataset_dir)
    dtypes = {"user_id": "int64", "title_id": "int64", "rating": "float64", "ts": "int64"}
    names = list(RATINGS_COLUMNS)
    if fmt == "ml-100k":
        path = _require_file(dataset_dir, "u.data")
        frame = pd.read_csv(path, sep="\t", header=None, names=names, dtype=dtypes)
    elif fmt == "ml-1m":
        path = _require_file(dataset_dir, "ratings.dat")
        # A two-character separator forces pandas' slow Python parser; one byte keeps the C one.
        data = _read_bytes(path).replace(b"::", b"\t")
        frame = pd.read_csv(
            io.BytesIO(data), sep="\t", header=None, names=names, dtype=dtypes, encoding="latin-1"
        )
    else:
        path = _require_file(dataset_dir, "ratings.csv")
        expected = ["userId", "movieId", "rating", "timestamp"]
        frame = pd.read_csv(path, dtype=dict(zip(expected, dtypes.values(), strict=True)))
        if list(frame.columns) != expected:
            raise ValueError(f"{path} has header {list(frame.columns)}, expected {expected}")
        frame.columns = names
    if frame["rating"].isna().any():
        raise ValueError(f"{path} has ratings that are not numbers")
    return frame


def read_ratings(dataset_dir: Path) -> pd.DataFrame:
    """Every rating in file order: ``user_id`` (str), ``title_id`` (str), ``rating`` (float64),
    ``ts`` (int64 unix seconds)."""
    frame = _read_ratings_numeric(Path(dataset_dir))
    frame["user_id"] = frame["user_id"].astype(str)
    frame["title_id"] = frame["title_id"].astype(str)
    return frame


def _year_from_title(title: str) -> dt.date | None:
    match = _TITLE_YEAR.search(title)
    return dt.date(int(match.group(1)), 1, 1) if match else None


def _title_record(title_id: str, name: str, genres: list[str], release: dt.date | None) -> dict:
    return {
        "title_id": title_id,
        "name": name,
        "genres": genres,
        "release_date": release,
        "runtime_seconds": None,
        "maturity": None,
        "series_id": None,
        "season": None,
        "episode": None,
    }


def _split_genres(field: str) -> list[str]:
    field = field.strip()
    if not field or field == _NO_GENRES:
        return []
    return field.split("|")


def _read_titles_100k(dataset_dir: Path) -> list[dict]:
    path = _require_file(dataset_dir, "u.item")
    records = []
    for line_number, line in enumerate(_read_lines(path, "latin-1"), start=1):
        fields = line.split("|")
        if len(fields) != 5 + len(ML100K_GENRES):
            raise ValueError(
                f"{path} line {line_number} has {len(fields)} '|'-separated fields, expected "
                f"{5 + len(ML100K_GENRES)}"
            )
        title_id, name, release = fields[0], fields[1].strip(), fields[2].strip()
        flags = fields[5:]
        # The "unknown" flag means no genre is known, the same as ml-latest's "(no genres listed)".
        genres = [g for g, flag in zip(ML100K_GENRES, flags, strict=True) if flag == "1"]
        genres = [g for g in genres if g != "unknown"]
        if release:
            release_date = dt.datetime.strptime(release, _ML100K_DATE_FORMAT).date()
        else:
            release_date = _year_from_title(name)
        records.append(_title_record(title_id, name, genres, release_date))
    return records


def _read_titles_1m(dataset_dir: Path) -> list[dict]:
    path = _require_file(dataset_dir, "movies.dat")
    records = []
    for line_number, line in enumerate(_read_lines(path, "latin-1"), start=1):
        fields = line.split("::")
        if len(fields) != 3:
            raise ValueError(f"{path} line {line_number} is not MovieID::Title::Genres: {line!r}")
        title_id, name, genres = fields[0], fields[1].strip(), _split_genres(fields[2])
        records.append(_title_record(title_id, name, genres, _year_from_title(name)))
    return records


def _read_titles_latest(dataset_dir: Path) -> list[dict]:
    path = _require_file(dataset_dir, "movies.csv")
    # keep_default_na=False: a film called "NaN" or "None" stays a name, not a missing value.
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    if list(frame.columns) != ["movieId", "title", "genres"]:
        raise ValueError(f"{path} has header {list(frame.columns)}, expected movieId,title,genres")
    return [
        _title_record(movie_id, title.strip(), _split_genres(genres), _year_from_title(title))
        for movie_id, title, genres in frame.itertuples(index=False)
    ]


def read_titles(dataset_dir: Path) -> pd.DataFrame:
    """The movie list as ``bronze/titles`` rows, in file order.

    Columns are exactly ``BRONZE_TITLES``'s: ``genres`` is a ``list[str]`` (empty when none is
    listed), ``release_date`` a ``datetime.date`` (u.item's date, else 1 January of the year in the
    title) or ``None``; MovieLens has no runtime, maturity or series, so those are ``None``.
    """
    dataset_dir = Path(dataset_dir)
    readers = {
        "ml-100k": _read_titles_100k,
        "ml-1m": _read_titles_1m,
        "ml-latest": _read_titles_latest,
    }
    records = readers[detect_format(dataset_dir)](dataset_dir)
    return pd.DataFrame.from_records(records, columns=list(TITLES_COLUMNS))


def read_users(dataset_dir: Path) -> pd.DataFrame:
    """Member demographics (ml-100k and ml-1m only): ``user_id``, ``gender``, ``age``,
    ``occupation``, ``zip``.

    ``age`` is years in ml-100k but the lower bound of an age band (1, 18, 25, …) in ml-1m;
    ml-1m's occupation codes are mapped to their README names. ml-latest has no user file.
    """
    dataset_dir = Path(dataset_dir)
    fmt = detect_format(dataset_dir)
    rows = []
    if fmt == "ml-100k":
        path = _require_file(dataset_dir, "u.user")
        for line in _read_lines(path, "latin-1"):
            user_id, age, gender, occupation, zip_code = line.split("|")
            rows.append((user_id, gender, int(age), occupation, zip_code))
    elif fmt == "ml-1m":
        path = _require_file(dataset_dir, "users.dat")
        for line in _read_lines(path, "latin-1"):
            user_id, gender, age, occupation, zip_code = line.split("::")
            rows.append((user_id, gender, int(age), ML1M_OCCUPATIONS[int(occupation)], zip_code))
    else:
        raise ValueError(f"{dataset_dir} is {fmt}, which has no user file (only ml-100k and ml-1m)")
    frame = pd.DataFrame(rows, columns=list(USERS_COLUMNS))
    frame["age"] = frame["age"].astype("int64")
    return frame


def _write_atomic(path: Path, data: bytes) -> None:
    """Write through a hidden temporary file and rename it, so a reader never sees half a file.

    The temporary name starts with a dot because Spark's file sources skip such names.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _event_lines(day: pd.DataFrame) -> bytes:
    """One landing JSON object per rating, keys in ``LANDING_EVENT_FIELDS`` order.

    Built with vectorised string operations rather than ``json.dumps`` per row (ml-32m has 32
    million rows); that is safe because ids are integers, ratings finite floats and timestamps
    fixed-format, none of which needs JSON escaping.
    """
    user = day["user_id"].astype(str)
    title = day["title_id"].astype(str)
    ts = day["ts"]
    iso = np.datetime_as_string(ts.to_numpy().astype("datetime64[s]"), unit="s")
    # Each value already JSON-encoded: a Series per row, or one literal shared by every row.
    encoded: dict[str, pd.Series | str] = {
        "event_id": '"ml-' + user + "-" + title + "-" + ts.astype(str) + '"',
        "user_id": '"' + user + '"',
        "title_id": '"' + title + '"',
        "event_type": '"rate"',
        "event_ts": '"' + pd.Series(iso, index=day.index) + 'Z"',
        "watch_seconds": "null",
        "position_seconds": "null",
        "rating": day["rating"].astype(str),
        "device": '"unknown"',
        "country": "null",
    }
    lines = pd.Series("{", index=day.index)
    for i, key in enumerate(LANDING_EVENT_FIELDS):
        lines = lines + ("," if i else "") + f'"{key}":' + encoded[key]
    return "".join((lines + "}\n").tolist()).encode("utf-8")


def _titles_jsonl(titles: pd.DataFrame) -> bytes:
    lines = []
    for record in titles.to_dict(orient="records"):
        release = record["release_date"]
        record["release_date"] = release.isoformat() if release is not None else None
        lines.append(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
    return "".join(lines).encode("utf-8")


def write_landing(
    dataset_dir: Path, landing_root: str, limit_days: int | None = None
) -> ImportSummary:
    """Write the ratings as ``rate`` events and the movies as the catalogue under ``landing_root``.

    Events go to ``<landing_root>/events/date=YYYY-MM-DD/part-00000.jsonl``, one folder per UTC
    date of the rating's timestamp, in file order within a day; ``event_id`` is
    ``ml-<user>-<movie>-<ts>``, so re-importing rewrites identical files (and bronze dedupes on it).
    The catalogue goes to ``<landing_root>/titles/date=<first day>/titles.jsonl``. ``limit_days``
    keeps only the earliest that many days that have ratings (a quick demo or test slice); the
    catalogue is always written whole. Every file is written atomically, to a local folder (a
    path or a ``file://`` URI).
    """
    dataset_dir = Path(dataset_dir)
    if limit_days is not None and limit_days < 1:
        raise ValueError(f"limit_days must be at least 1 (or None for all days), got {limit_days}")
    fmt = detect_format(dataset_dir)
    ratings = _read_ratings_numeric(dataset_dir)
    titles = read_titles(dataset_dir)
    if ratings.empty:
        raise ValueError(f"{dataset_dir} has no ratings to import")

    day_number = ratings["ts"].to_numpy() // _SECONDS_PER_DAY
    # A stable sort groups each day's rows together while keeping their file order.
    order = np.argsort(day_number, kind="stable")
    ratings = ratings.iloc[order]
    day_number = day_number[order]
    days, starts = np.unique(day_number, return_index=True)
    ends = np.append(starts[1:], len(day_number))
    if limit_days is not None:
        days, starts, ends = days[:limit_days], starts[:limit_days], ends[:limit_days]

    root = Path(storage.local_path(landing_root, "the MovieLens importer"))
    # datetime64[D] counts days from 1970-01-01 UTC, exactly as ts // 86400 does.
    day_names = [str(np.datetime64(int(d), "D")) for d in days]
    for name, start, end in zip(day_names, starts, ends, strict=True):
        path = root / "events" / f"date={name}" / "part-00000.jsonl"
        _write_atomic(path, _event_lines(ratings.iloc[start:end]))
    _write_atomic(root / "titles" / f"date={day_names[0]}" / "titles.jsonl", _titles_jsonl(titles))

    return ImportSummary(
        dataset_format=fmt,
        events=int(ends[-1] - starts[0]),
        days=len(day_names),
        titles=len(titles),
        first_day=day_names[0],
        last_day=day_names[-1],
    )


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.sources.movielens",
        description="Import a GroupLens MovieLens dataset folder as reelfm landing files.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    importer = commands.add_parser(
        "import",
        help="write ratings as rate events and movies as the catalogue",
        description="Write <landing-root>/events/date=YYYY-MM-DD/part-00000.jsonl per UTC day "
        "and <landing-root>/titles/date=<first day>/titles.jsonl.",
    )
    importer.add_argument(
        "dataset_dir", type=Path, help="unpacked MovieLens folder (ml-100k, ml-1m, ml-latest…)"
    )
    importer.add_argument(
        "--landing-root",
        default=None,
        help="landing root to write into (default: REELFM_LANDING_ROOT or <REELFM_HOME>/landing)",
    )
    importer.add_argument(
        "--limit-days",
        type=int,
        default=None,
        help="only the earliest N days that have ratings (default: all)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    args = _parse_args(argv)
    landing_root = args.landing_root or Settings.from_env().landing_root
    summary = write_landing(args.dataset_dir, landing_root, limit_days=args.limit_days)
    print(
        f"{summary.dataset_format}: wrote {summary.events} rate events over {summary.days} days "
        f"({summary.first_day}..{summary.last_day}) and {summary.titles} titles to {landing_root}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
