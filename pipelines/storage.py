"""The files the driver touches itself, on whatever filesystem the lake and landing roots name.

Spark reads and writes the tables through Hadoop's filesystems, so ``REELFM_LAKE_ROOT`` and
``REELFM_LANDING_ROOT`` may be local folders or URIs (``file://``, ``s3a://``, ``abfss://``,
``gs://``, ``hdfs://``). A few files are handled by the driver, not by Spark: the listing of a
landing day, the catalogue snapshots' folders, the generator's manifests, Parquet footers and
the shared ``tokenizer.json``. They go through fsspec with the same URI, so moving the lake to
object storage is configuration: install the fsspec package for the scheme (``s3fs`` for
``s3a://``, ``adlfs`` for ``abfss://``, ``gcsfs`` for ``gs://``) where the driver runs.

Paths handed back keep the caller's spelling (``s3a://bucket/…`` stays ``s3a://``, which
fsspec would write ``s3://``), so Spark can read what is listed here.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from fsspec import AbstractFileSystem
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem


@dataclass(frozen=True)
class Entry:
    """One item of a folder: its name, its full path (in the folder's spelling), its kind."""

    name: str
    path: str
    is_dir: bool
    size: int
    modified: str  # a version stamp: modification time, or the store's ETag when it has none


def _fs(path: str) -> tuple[AbstractFileSystem, str]:
    try:
        return url_to_fs(path)
    except (ImportError, ValueError) as error:
        scheme = path.split("://", 1)[0]
        raise RuntimeError(
            f"No filesystem for {path!r}: install the fsspec package for '{scheme}://' "
            f"where the driver runs (s3fs for s3a://, adlfs for abfss://, gcsfs for gs://). "
            f"{error}"
        ) from error


def join(folder: str, *names: str) -> str:
    """``folder/name/…`` without normalising the folder's scheme or authority."""
    return "/".join([folder.rstrip("/"), *(name.strip("/") for name in names)])


def is_local(path: str) -> bool:
    """Whether ``path`` is on the machine's own filesystem (a plain path or ``file://``)."""
    return isinstance(_fs(path)[0], LocalFileSystem)


def local_path(path: str | os.PathLike[str], what: str = "this") -> str:
    """The local folder ``path`` names (a plain path or a ``file://`` URI); a ``ValueError``
    that says so when it is remote (``what`` names the tool that writes only locally)."""
    path = os.fspath(path)
    remote = "://" in path and not path.startswith(("file://", "local://"))
    if remote or not isinstance(_fs(path)[0], LocalFileSystem):
        raise ValueError(
            f"{what} writes to a local folder, and {path!r} is not one: write to a local "
            "folder and copy it to the object store with your usual tool."
        )
    return _fs(path)[1]


def exists(path: str) -> bool:
    fs, inner = _fs(path)
    return fs.exists(inner)


def is_dir(path: str) -> bool:
    fs, inner = _fs(path)
    return fs.isdir(inner)


def list_folder(folder: str) -> list[Entry]:
    """The items directly in ``folder``, sorted by name; ``FileNotFoundError`` when it is absent."""
    fs, inner = _fs(folder)
    if not fs.isdir(inner):
        raise FileNotFoundError(folder)
    entries = []
    for info in fs.ls(inner, detail=True):
        name = info["name"].rstrip("/").rsplit("/", 1)[-1]
        stamp = info.get("mtime") or info.get("LastModified") or info.get("ETag") or ""
        entries.append(
            Entry(
                name=name,
                path=join(folder, name),
                is_dir=info["type"] == "directory",
                size=int(info.get("size") or 0),
                modified=str(stamp),
            )
        )
    return sorted(entries, key=lambda entry: entry.name)


def read_text(path: str) -> str:
    fs, inner = _fs(path)
    with fs.open(inner, "r", encoding="utf-8") as handle:
        return handle.read()


@contextlib.contextmanager
def open_binary(path: str) -> Iterator:
    """A seekable binary handle on ``path`` (for reading a Parquet footer, say)."""
    fs, inner = _fs(path)
    with fs.open(inner, "rb") as handle:
        yield handle


def write_text(path: str, text: str) -> None:
    """Write ``path`` whole: readers see the old text or the new, never a part.

    Locally by a temporary file and a rename; an object store's put is already all-or-nothing.
    """
    fs, inner = _fs(path)
    parent = inner.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    if isinstance(fs, LocalFileSystem):
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(inner)}.", suffix=".tmp", dir=parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, inner)
        except BaseException:
            os.unlink(tmp)
            raise
        return
    fs.pipe_file(inner, text.encode("utf-8"))


@contextlib.contextmanager
def exclusive(path: str) -> Iterator[None]:
    """Hold an exclusive lock named after ``path`` while a read-modify-write of it runs.

    Local files get a POSIX lock on ``<path>.lock`` (a separate file, since ``write_text``
    replaces ``path`` by rename). Object stores have no locks: there the jobs must not run two
    writers at once, which the daily jobs guarantee (gold/D waits for gold/D-1).
    """
    fs, inner = _fs(path)
    if not isinstance(fs, LocalFileSystem):
        yield
        return
    fs.makedirs(inner.rsplit("/", 1)[0], exist_ok=True)
    with open(f"{inner}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, even on error
        yield
