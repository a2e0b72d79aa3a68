"""Output folders the jobs write (evaluations, sweep reports) and may later replace, without losing a user's files.

Every folder written through ``staged_output`` carries a marker file (``.guitar_cls_output.json``) naming its kind
and listing the files we wrote. A later run may replace such a folder; any other non-empty folder is refused unless
the caller passes ``overwrite``, and even then only our files are written or removed: files we did not write are
never deleted.

The new files are written into a temporary folder beside the target first, so a failed run leaves the previous
output as it was. When the target holds nothing but our previous output it is swapped in whole (two renames);
otherwise our files are moved in one by one (each an atomic rename) next to the user's.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

log = logging.getLogger(__name__)

MARKER = ".guitar_cls_output.json"


class OutputFolderError(ValueError):
    """An output folder cannot be written without losing files that are not ours; the message names it."""


def read_marker(out: Path) -> dict[str, Any] | None:
    """Returns the marker of a folder we wrote (``{"kind", "files"}``), or None when it has none or a bad one."""
    try:
        marker = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return None
    files = marker.get("files") if isinstance(marker, dict) else None
    if not isinstance(marker.get("kind") if isinstance(marker, dict) else None, str) or not isinstance(files, list):
        return None
    if not all(isinstance(f, str) and _is_plain_relative(f) for f in files):
        return None  # a marker naming ../ or absolute paths is not one we wrote
    return {"kind": marker["kind"], "files": list(files)}


def _is_plain_relative(rel: str) -> bool:
    p = PurePosixPath(rel)
    return bool(rel) and not p.is_absolute() and ".." not in p.parts and "." not in p.parts


def check_output_folder(out: str | Path, kind: str, *, overwrite: bool = False) -> dict[str, Any] | None:
    """Returns the previous marker of ``out`` (None when ``out`` is absent, empty or not ours but ``overwrite``).

    Raises:
        OutputFolderError: ``out`` is not a folder, or is a non-empty folder that is not a previous ``kind`` output
            of ours and ``overwrite`` is not set.
    """
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return None
    if not out.is_dir():
        raise OutputFolderError(f"{out} exists and is not a folder: choose another output folder")
    if not any(out.iterdir()):
        return None
    marker = read_marker(out)
    if marker is not None and (marker["kind"] == kind or overwrite):
        return marker
    if overwrite:
        return None
    what = f"a {marker['kind']} output, not a {kind}" if marker else f"not a previous {kind} output (no {MARKER})"
    raise OutputFolderError(
        f"{out} is not empty and is {what}: choose another output folder, or pass --overwrite to write our files "
        "into it (files that are not ours are kept)"
    )


@contextmanager
def staged_output(out: str | Path, kind: str, *, overwrite: bool = False) -> Iterator[Path]:
    """Yields a fresh temporary folder beside ``out`` to write into; on success its files replace ``out``'s.

    ``out`` is checked first (``check_output_folder``), so a refused folder fails before any work. On an error in
    the block the temporary folder is removed and ``out`` is left as it was.
    """
    out = Path(out).expanduser().resolve()
    check_output_folder(out, kind, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    _make_public(tmp)
    try:
        yield tmp
        replace_output(tmp, out, kind, overwrite=overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only ever holds what we wrote (gone after a whole-folder swap)


def replace_output(tmp: Path, out: Path, kind: str, *, overwrite: bool = False) -> None:
    """Moves the finished folder ``tmp`` into ``out`` (see the module docstring); writes the marker last."""
    previous = check_output_folder(out, kind, overwrite=overwrite)  # again: the folder may have changed meanwhile
    ours = sorted(_files(tmp) - {MARKER})
    (tmp / MARKER).write_text(json.dumps({"kind": kind, "files": [*ours, MARKER]}, indent=1))
    if not out.exists() or not any(out.iterdir()):
        os.rename(tmp, out)  # replaces an empty folder
        return
    old_files = set(previous["files"]) if previous else set()
    if previous is not None and _files(out) <= old_files:
        _swap(tmp, out, old_files)
    else:
        _merge(tmp, out, ours, old_files)


def _swap(tmp: Path, out: Path, old_files: set[str]) -> None:
    """Replaces ``out`` (our previous output, nothing else) by ``tmp`` with two renames, then deletes the old files."""
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        os.rename(old, out)
        raise
    _remove_ours(old, old_files)
    try:
        old.rmdir()
    except OSError:
        log.warning("kept %s: files that are not ours appeared in it while it was replaced", old)


def _merge(tmp: Path, out: Path, ours: list[str], old_files: set[str]) -> None:
    """Moves our files into ``out`` one by one, removes our previous files that are gone, keeps everything else."""
    real_out = out.resolve()
    for rel in ours:
        dst = out / rel
        if dst.is_dir() and not dst.is_symlink():
            raise OutputFolderError(f"{out}: {rel} is a folder there; not replacing it with a file")
        parent = dst.parent
        if parent.exists() and not parent.resolve().is_relative_to(real_out):
            raise OutputFolderError(f"{out}: {parent.relative_to(out)} leads outside the folder; not writing there")
    for rel in ours:
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / rel, dst)
    _remove_ours(out, old_files - set(ours) - {MARKER})
    os.replace(tmp / MARKER, out / MARKER)


def _remove_ours(folder: Path, files: set[str]) -> None:
    """Deletes the listed files under ``folder`` and the sub-folders they leave empty (never ``folder`` itself)."""
    for rel in sorted(files, key=lambda r: -len(PurePosixPath(r).parts)):
        path = folder / rel
        if path.is_file() or path.is_symlink():
            path.unlink()
        parent = path.parent
        while parent != folder and parent.is_dir() and not parent.is_symlink() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent


def _files(folder: Path) -> set[str]:
    """Returns the relative POSIX paths of every file and symlink under ``folder`` (folders themselves left out)."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(folder):
        base = Path(dirpath)
        links = [d for d in dirnames if (base / d).is_symlink()]  # os.walk does not descend into them
        for name in [*filenames, *links]:
            out.add((base / name).relative_to(folder).as_posix())
    return out


def _make_public(path: Path) -> None:
    """Gives a mkdtemp folder the permissions of an ordinary one (0777 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o777 & ~umask)
