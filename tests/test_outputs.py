"""Output folders: a folder that is not ours is refused (or, with overwrite, only our files change); our previous
output is replaced; a failed run changes nothing; files we did not write are never deleted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guitar_cls.outputs import MARKER, OutputFolderError, check_output_folder, staged_output


def write(out: Path, files: dict[str, str], *, kind: str = "evaluation", overwrite: bool = False) -> None:
    with staged_output(out, kind, overwrite=overwrite) as tmp:
        for rel, text in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(text)


def tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def no_leftovers(parent: Path) -> bool:
    return not [p for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_new_and_empty_folders_get_our_files_and_a_marker(tmp_path: Path) -> None:
    write(tmp_path / "new", {"a.csv": "1", "sub/b.png": "2"})
    (tmp_path / "empty").mkdir()
    write(tmp_path / "empty", {"a.csv": "1"})
    assert set(tree(tmp_path / "new")) == {"a.csv", "sub/b.png", MARKER}
    marker = json.loads((tmp_path / "new" / MARKER).read_text())
    assert marker == {"kind": "evaluation", "files": ["a.csv", "sub/b.png", MARKER]}
    assert tree(tmp_path / "empty")["a.csv"] == "1"
    assert no_leftovers(tmp_path)


def test_a_folder_that_is_not_ours_is_refused_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    ran = []
    with pytest.raises(OutputFolderError, match=r"precious is not empty .*--overwrite"):
        with staged_output(out, "evaluation"):
            ran.append(True)
    assert not ran and tree(out) == {"notes.txt": "keep me"} and no_leftovers(tmp_path)


def test_overwrite_writes_only_our_files_and_keeps_the_users(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    (out / "mlruns").mkdir(parents=True)
    (out / "mlruns" / "meta.yaml").write_text("store")
    (out / "notes.txt").write_text("keep me")
    write(out, {"metrics.json": "v1", "plot.png": "p"}, overwrite=True)
    assert tree(out) == {
        "mlruns/meta.yaml": "store",
        "notes.txt": "keep me",
        "metrics.json": "v1",
        "plot.png": "p",
        MARKER: (out / MARKER).read_text(),
    }
    # now a previous output of ours (with user files beside it): replaced without overwrite, user files kept,
    # our files that the new run does not write are removed
    write(out, {"metrics.json": "v2"})
    assert set(tree(out)) == {"mlruns/meta.yaml", "notes.txt", "metrics.json", MARKER}
    assert tree(out)["metrics.json"] == "v2" and tree(out)["notes.txt"] == "keep me"
    assert no_leftovers(tmp_path)


def test_our_previous_output_is_replaced_whole(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    write(out, {"a.csv": "old", "sub/stale.png": "x"})
    write(out, {"a.csv": "new"})
    assert tree(out) == {"a.csv": "new", MARKER: (out / MARKER).read_text()}
    assert not (out / "sub").exists() and no_leftovers(tmp_path)


def test_a_failed_run_leaves_the_previous_output(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    write(out, {"a.csv": "old"})
    (out / "notes.txt").write_text("mine")
    before = tree(out)
    with pytest.raises(RuntimeError, match="disk full"):
        with staged_output(out, "evaluation") as tmp:
            (tmp / "a.csv").write_text("half")
            raise RuntimeError("disk full")
    assert tree(out) == before and no_leftovers(tmp_path)


def test_files_and_other_kinds_are_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("user data")
    for overwrite in (False, True):
        with pytest.raises(OutputFolderError, match="is not a folder"):
            check_output_folder(tmp_path / "file", "evaluation", overwrite=overwrite)
    assert (tmp_path / "file").read_text() == "user data"
    write(tmp_path / "report", {"report.md": "r"}, kind="sweep report")
    with pytest.raises(OutputFolderError, match="a sweep report output, not a evaluation"):
        check_output_folder(tmp_path / "report", "evaluation")


def test_a_forged_marker_does_not_make_files_ours(tmp_path: Path) -> None:
    """A marker listing paths outside the folder is not one we wrote: the folder counts as foreign."""
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    (out / MARKER).write_text(json.dumps({"kind": "evaluation", "files": ["../outside.txt", "x"]}))
    (out / "x").write_text("user")
    with pytest.raises(OutputFolderError, match="no .guitar_cls_output.json"):
        write(out, {"a.csv": "1"})
    write(out, {"a.csv": "1"}, overwrite=True)
    assert outside.read_text() == "keep" and (out / "x").read_text() == "user"


def test_overwrite_does_not_write_through_a_symlinked_folder(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(elsewhere)
    with pytest.raises(OutputFolderError, match="leads outside the folder"):
        write(out, {"sub/a.csv": "1"}, overwrite=True)
    assert not list(elsewhere.iterdir()) and no_leftovers(tmp_path)
