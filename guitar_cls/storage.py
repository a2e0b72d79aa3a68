"""Ray results storage as a path or a URI: a local (or NFS) folder, or ``s3://bucket/prefix`` and the other schemes
``pyarrow.fs.FileSystem.from_uri`` knows (``gs://``, ``hdfs://``...), which Ray Tune and Train use for the same path.

The object store's endpoint and credentials come from the environment pyarrow reads (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``...), on the driver and on every Ray node
alike, so the configured ``logging.storage_path`` stays a plain URI. No Ray import: the report reads from here too.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

import pyarrow.fs as pafs


def is_remote(path: str | Path) -> bool:
    """Returns True for a URI other than ``file://`` (``s3://bucket/prefix``), False for a local path."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


def resolve(path: str | Path) -> tuple[pafs.FileSystem, str]:
    """Returns (the filesystem, the path inside it) of a local path or a URI (``s3://b/p`` -> S3, ``b/p``)."""
    text = str(path)
    if is_remote(text) or text.startswith("file://"):
        return pafs.FileSystem.from_uri(text)
    return pafs.LocalFileSystem(), str(Path(text).expanduser().resolve())


def join(base: str | Path, *parts: str) -> str:
    """Returns ``base`` joined with ``parts``: ``/`` separated, a URI's scheme kept."""
    if is_remote(base):
        return posixpath.join(str(base).rstrip("/"), *parts)
    return str(Path(base).joinpath(*parts))


def uri(fs_path: str, like: str | Path) -> str:
    """Returns a path inside the filesystem of ``like`` (what Ray's ``Checkpoint.path`` gives: ``bucket/prefix/...``
    for ``s3://bucket/prefix``) as a location usable on its own: with ``like``'s scheme for a URI, else unchanged."""
    if not is_remote(like):
        return fs_path
    return f"{str(like).split('://', 1)[0]}://{fs_path.lstrip('/')}"


def file_type(path: str | Path) -> pafs.FileType:
    """Returns what is at ``path``: ``FileType.Directory``, ``File`` or ``NotFound`` (a key prefix in an object
    store counts as a directory)."""
    fs, inner = resolve(path)
    return fs.get_file_info(inner).type


def is_dir(path: str | Path) -> bool:
    """Returns True when ``path`` is a folder (local) or a key prefix holding objects (object store)."""
    return file_type(path) == pafs.FileType.Directory


def is_file(path: str | Path) -> bool:
    return file_type(path) == pafs.FileType.File


def read_text(path: str | Path) -> str:
    """Returns a file's text (UTF-8)."""
    fs, inner = resolve(path)
    with fs.open_input_stream(inner) as f:
        return f.read().decode()


def child_files(base: str | Path, name: str) -> list[str]:
    """Returns ``<base>/<child>/<name>`` for every direct child folder of ``base`` holding a file ``name``, sorted,
    as locations of the same kind as ``base`` (paths or URIs); [] when ``base`` does not exist."""
    fs, inner = resolve(base)
    try:
        children = fs.get_file_info(pafs.FileSelector(inner, recursive=False))
    except FileNotFoundError:
        return []
    wanted = [posixpath.join(c.path, name) for c in children if c.type == pafs.FileType.Directory]
    found = [info.path for info in fs.get_file_info(wanted) if info.type == pafs.FileType.File] if wanted else []
    return sorted(uri(p, base) if is_remote(base) else p for p in found)


def fetch(path: str | Path, dest: Path) -> Path:
    """Returns ``dest`` holding a copy of the file at ``path`` (copied once: an existing ``dest`` is kept)."""
    dest = Path(dest)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fs, inner = resolve(path)
    tmp = dest.with_name(f".{dest.name}.part")
    pafs.copy_files(inner, str(tmp), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    tmp.replace(dest)
    return dest


__all__ = ["child_files", "fetch", "file_type", "is_dir", "is_file", "is_remote", "join", "read_text", "resolve", "uri"]
