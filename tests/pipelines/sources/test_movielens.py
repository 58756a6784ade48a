"""Tests for the MovieLens importer: the real GroupLens files plus small hand-made folders.

The published statistics asserted here come from ``/work/shared/datasets/README.md``; a parser
that drops, duplicates or misreads a row cannot match all of them.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipelines.schemas import BRONZE_TITLES, LANDING_EVENT_FIELDS
from pipelines.sources.movielens import (
    detect_format,
    main,
    read_ratings,
    read_titles,
    read_users,
    write_landing,
)

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def ml100k(shared_datasets: Path) -> Path:
    return shared_datasets / "ml-100k"


@pytest.fixture(scope="module")
def ml1m(shared_datasets: Path) -> Path:
    return shared_datasets / "ml-1m"


@pytest.fixture(scope="module")
def ml_latest_small(shared_datasets: Path) -> Path:
    return shared_datasets / "ml-latest-small"


@pytest.fixture()
def tiny_latest(tmp_path: Path) -> Path:
    """A plain-text (not gzipped) ml-latest folder with the awkward cases in a handful of rows."""
    folder = tmp_path / "tiny-latest"
    folder.mkdir()
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n"
        "7,11,4.5,86399\n"  # last second of 1970-01-01
        "7,2,0.5,86400\n"  # first second of 1970-01-02
        "3,11,3.0,0\n"  # back to day one: file order is kept within a day
    )
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n"
        '11,"American President, The (1995)",Comedy|Drama|Romance\n'
        "2,Babylon 5 (1994) ,(no genres listed)\n"
        "5,Cosmos,Documentary\n"
    )
    return folder


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_detect_format_on_real_folders(ml100k: Path, ml1m: Path, ml_latest_small: Path) -> None:
    assert detect_format(ml100k) == "ml-100k"
    assert detect_format(ml1m) == "ml-1m"
    assert detect_format(ml_latest_small) == "ml-latest"


def test_detect_format_rejects_other_folders(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not movielens")
    with pytest.raises(ValueError, match="not a MovieLens dataset folder"):
        detect_format(tmp_path)


def test_ml100k_ratings_match_published_statistics(ml100k: Path) -> None:
    ratings = read_ratings(ml100k)

    assert list(ratings.columns) == ["user_id", "title_id", "rating", "ts"]
    assert ratings["rating"].dtype == "float64" and ratings["ts"].dtype == "int64"
    assert isinstance(ratings["user_id"].iloc[0], str)
    assert len(ratings) == 100_000
    assert ratings["user_id"].nunique() == 943
    assert ratings["title_id"].nunique() == 1_682
    assert sorted(ratings["rating"].unique()) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert (ratings["ts"].min(), ratings["ts"].max()) == (874_724_710, 893_286_638)
    # File order: u.data starts "196 242 3 881250949".
    assert ratings.iloc[0].tolist() == ["196", "242", 3.0, 881_250_949]


def test_ml100k_titles_parse_genres_dates_and_latin1(ml100k: Path) -> None:
    titles = read_titles(ml100k).set_index("title_id", drop=False)

    assert list(titles.columns) == [field.name for field in BRONZE_TITLES.fields]
    assert len(titles) == 1_682
    toy_story = titles.loc["1"]
    assert toy_story["name"] == "Toy Story (1995)"
    assert toy_story["genres"] == ["Animation", "Children's", "Comedy"]
    assert toy_story["release_date"] == dt.date(1995, 1, 1)
    assert titles.loc["1373", "release_date"] == dt.date(1971, 2, 4)  # "4-Feb-1971"
    # Item 267 is "unknown" with no date and only the "unknown" genre flag.
    assert titles.loc["267", "genres"] == [] and titles.loc["267", "release_date"] is None
    assert titles.loc["543", "name"] == "Misérables, Les (1995)"
    unknown = ["runtime_seconds", "maturity", "series_id", "season", "episode"]
    assert titles[unknown].isna().all().all()


def test_ml100k_users(ml100k: Path) -> None:
    users = read_users(ml100k)

    assert list(users.columns) == ["user_id", "gender", "age", "occupation", "zip"]
    assert len(users) == 943
    assert users.iloc[0].tolist() == ["1", "M", 24, "technician", "85711"]


def test_ml_latest_small_matches_published_statistics(ml_latest_small: Path) -> None:
    ratings = read_ratings(ml_latest_small)
    titles = read_titles(ml_latest_small).set_index("title_id", drop=False)

    assert len(ratings) == 100_836
    assert ratings["user_id"].nunique() == 610
    assert ratings["title_id"].nunique() == 9_724
    assert (ratings["rating"].min(), ratings["rating"].max()) == (0.5, 5.0)
    assert (ratings["ts"].min(), ratings["ts"].max()) == (828_124_615, 1_537_799_250)
    assert len(titles) == 9_742
    assert set(ratings["title_id"]) <= set(titles["title_id"])
    assert titles.loc["1", "genres"] == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    assert titles.loc["11", "name"] == "American President, The (1995)"  # quoted, with a comma
    assert titles.loc["143410", "genres"] == []  # "(no genres listed)"
    # "From Dusk Till Dawn 2: ... (1999) " has a trailing space after the year.
    assert titles.loc["27008", "release_date"] == dt.date(1999, 1, 1)
    assert titles.loc["27008", "name"].endswith("(1999)")
    assert titles.loc["171749", "release_date"] == dt.date(2006, 1, 1)  # "(2006–2007)"
    assert titles.loc["40697", "release_date"] is None  # "Babylon 5": no year at all


def test_ml1m_movies_users_and_latin1(ml1m: Path) -> None:
    titles = read_titles(ml1m).set_index("title_id", drop=False)
    users = read_users(ml1m)

    assert len(titles) == 3_883
    assert titles.loc["1", "genres"] == ["Animation", "Children's", "Comedy"]
    assert titles.loc["73", "name"] == "Misérables, Les (1995)"
    assert titles.loc["570", "name"] == "Slingshot, The (Kådisbellan ) (1993)"
    assert len(users) == 6_040
    assert users["user_id"].nunique() == 6_040
    # users.dat line 1 is "1::F::1::10::48067"; occupation 10 is "K-12 student".
    assert users.iloc[0].tolist() == ["1", "F", 1, "K-12 student", "48067"]


def test_ml1m_ratings_parser_on_hand_made_file(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "ratings.dat.gz", "wt", encoding="latin-1") as f:
        f.write("1::1193::5::978300760\n1::661::3::978302109\n6040::1097::4::956715648\n")

    ratings = read_ratings(tmp_path)

    assert detect_format(tmp_path) == "ml-1m"
    assert ratings.to_dict(orient="list") == {
        "user_id": ["1", "1", "6040"],
        "title_id": ["1193", "661", "1097"],
        "rating": [5.0, 3.0, 4.0],
        "ts": [978_300_760, 978_302_109, 956_715_648],
    }


def test_ml1m_without_ratings_says_which_file_is_missing(ml1m: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"ratings\.dat"):
        read_ratings(ml1m)


def test_read_users_refuses_ml_latest(ml_latest_small: Path) -> None:
    with pytest.raises(ValueError, match="no user file"):
        read_users(ml_latest_small)


def test_write_landing_ml100k_puts_every_rating_in_its_utc_day(
    ml100k: Path, tmp_path: Path
) -> None:
    summary = write_landing(ml100k, str(tmp_path))

    day_files = sorted((tmp_path / "events").glob("date=*/part-00000.jsonl"))
    events = 0
    for path in day_files:
        day = path.parent.name.removeprefix("date=")
        records = read_jsonl(path)
        events += len(records)
        assert all(list(r) == list(LANDING_EVENT_FIELDS) for r in records)
        assert all(r["event_ts"].startswith(day) and r["event_ts"].endswith("Z") for r in records)
    assert events == summary.events == 100_000
    assert len(day_files) == summary.days
    assert (summary.first_day, summary.last_day) == ("1997-09-20", "1998-04-22")
    titles = read_jsonl(tmp_path / "titles" / "date=1997-09-20" / "titles.jsonl")
    assert len(titles) == summary.titles == 1_682
    assert titles[0]["release_date"] == "1995-01-01" and titles[0]["genres"][0] == "Animation"
    assert not list(tmp_path.rglob(".*"))  # no temporary files left behind


def test_write_landing_events_are_exact_and_deterministic(
    tiny_latest: Path, tmp_path: Path
) -> None:
    summary = write_landing(tiny_latest, str(tmp_path / "a"))
    write_landing(tiny_latest, str(tmp_path / "b"))

    first_day = tmp_path / "a" / "events" / "date=1970-01-01" / "part-00000.jsonl"
    assert read_jsonl(first_day) == [
        {
            "event_id": "ml-7-11-86399",
            "user_id": "7",
            "title_id": "11",
            "event_type": "rate",
            "event_ts": "1970-01-01T23:59:59Z",
            "watch_seconds": None,
            "position_seconds": None,
            "rating": 4.5,
            "device": "unknown",
            "country": None,
        },
        {
            "event_id": "ml-3-11-0",
            "user_id": "3",
            "title_id": "11",
            "event_type": "rate",
            "event_ts": "1970-01-01T00:00:00Z",
            "watch_seconds": None,
            "position_seconds": None,
            "rating": 3.0,
            "device": "unknown",
            "country": None,
        },
    ]
    second_day = read_jsonl(tmp_path / "a" / "events" / "date=1970-01-02" / "part-00000.jsonl")
    assert [r["event_id"] for r in second_day] == ["ml-7-2-86400"]
    assert (summary.events, summary.days, summary.titles) == (3, 2, 3)
    titles = read_jsonl(tmp_path / "a" / "titles" / "date=1970-01-01" / "titles.jsonl")
    assert titles[1] == {
        "title_id": "2",
        "name": "Babylon 5 (1994)",
        "genres": [],
        "release_date": "1994-01-01",
        "runtime_seconds": None,
        "maturity": None,
        "series_id": None,
        "season": None,
        "episode": None,
    }
    for path in (tmp_path / "a").rglob("*.jsonl"):
        assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes()


def test_write_landing_limit_days_keeps_the_earliest_days(
    ml_latest_small: Path, tmp_path: Path
) -> None:
    ratings = read_ratings(ml_latest_small)
    day = pd.to_datetime(ratings["ts"], unit="s").dt.date.astype(str)
    first_days = sorted(day.unique())[:5]

    summary = write_landing(ml_latest_small, str(tmp_path), limit_days=5)

    folders = sorted(p.name for p in (tmp_path / "events").iterdir())
    assert folders == [f"date={d}" for d in first_days]
    assert summary.events == int(day.isin(first_days).sum())
    assert summary.titles == 9_742
    assert (tmp_path / "titles" / f"date={first_days[0]}" / "titles.jsonl").is_file()


def test_write_landing_rejects_a_non_positive_limit(tiny_latest: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="limit_days"):
        write_landing(tiny_latest, str(tmp_path), limit_days=0)


def test_cli_help_runs_as_a_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.sources.movielens", "import", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--landing-root" in result.stdout and "DATASET_DIR" in result.stdout.upper()


def test_cli_import_writes_landing_files(
    tiny_latest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    landing = tmp_path / "landing"

    assert main(["import", str(tiny_latest), "--landing-root", str(landing)]) == 0

    assert "3 rate events over 2 days" in capsys.readouterr().out
    assert len(list((landing / "events").glob("date=*/part-00000.jsonl"))) == 2
