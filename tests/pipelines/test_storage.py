"""The driver's own file access: local paths and URIs alike, paths kept in the caller's spelling."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import storage


@pytest.mark.parametrize("spelling", ["path", "uri"])
def test_list_folder_keeps_the_callers_spelling(tmp_path: Path, spelling: str) -> None:
    (tmp_path / "date=2026-01-02").mkdir()
    (tmp_path / "b.jsonl").write_text("{}\n")
    (tmp_path / "_injected.json").write_text("{}")
    folder = str(tmp_path) if spelling == "path" else tmp_path.as_uri()

    entries = storage.list_folder(folder)

    assert [(e.name, e.is_dir) for e in entries] == [
        ("_injected.json", False),
        ("b.jsonl", False),
        ("date=2026-01-02", True),
    ]
    assert entries[1].path == f"{folder}/b.jsonl" and entries[1].size == 3
    assert entries[1].modified  # a version stamp the titles upsert compares across runs
    with pytest.raises(FileNotFoundError):
        storage.list_folder(f"{folder}/absent")


def test_write_text_replaces_whole_and_reads_back_through_a_uri(tmp_path: Path) -> None:
    uri = (tmp_path / "deep/er/tokenizer.json").as_uri()
    storage.write_text(uri, "first")
    storage.write_text(uri, "second")

    assert storage.read_text(uri) == "second" and storage.exists(uri)
    assert storage.is_local(uri) and not storage.is_dir(uri)
    assert [p.name for p in (tmp_path / "deep/er").iterdir()] == ["tokenizer.json"]


def test_a_scheme_without_its_fsspec_package_says_what_to_install() -> None:
    with pytest.raises(RuntimeError, match="install the fsspec package"):
        storage.list_folder("abfss://container@account.dfs.core.windows.net/landing")


def test_local_tools_take_a_file_uri_and_refuse_a_remote_root(tmp_path: Path) -> None:
    assert storage.local_path(tmp_path.as_uri()) == str(tmp_path)
    assert storage.local_path(tmp_path) == str(tmp_path)
    with pytest.raises(ValueError, match="the synthetic generator writes to a local folder"):
        storage.local_path("s3a://bucket/landing", "the synthetic generator")


def test_a_store_that_is_not_local_takes_the_object_store_branch() -> None:
    """fsspec's in-memory filesystem stands in for an object store: no rename, no lock file."""
    from pipelines.tokens.tokenizer import InteractionTokenizer, update_tokenizer_file

    root = "memory://reelfm-test-lake/gold/tokenizer"
    assert not storage.is_local(root)
    first, added = update_tokenizer_file(root, ["b", "a"])
    again, added_again = update_tokenizer_file(root, ["c", "a"])

    assert (added, added_again) == (2, 1) and again.title_ids == ["a", "b", "c"]
    assert InteractionTokenizer.load(f"{root}/tokenizer.json") == again
    assert [e.name for e in storage.list_folder(root)] == ["tokenizer.json"]  # no .lock, no .tmp
    with pytest.raises(ValueError, match="not one"):
        storage.local_path(root)
