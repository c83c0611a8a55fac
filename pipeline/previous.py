"""A stage's previous complete output, set aside while a new plan starts and put back if none of its tasks succeeds.

When a stage reruns under a new plan (new inputs or config) over a finished output on a local filesystem, the runner
moves the old files under `_previous/` instead of deleting them. `set_aside` first writes `_previous/_files.json`
(the files it moves, and the new plan), then moves the manifest, then the rest. The first task of the new plan that
succeeds makes the old output obsolete and `_previous/` is deleted. A run that fails before that is repaired by
`recover`: if no task of the new plan has a done marker, it deletes every file outside `_previous/` that the listing
does not name (what the failed tasks wrote) and moves the listed files back. Every step can be repeated, so a
command killed while setting aside, running or restoring is repaired by the next command on that output, which
calls `recover` first, under the lock.

On object stores a move is a copy of every object, so there the previous output is deleted when the new plan starts.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow.fs as pafs

from pipeline.storage import Dir

PREVIOUS_DIR = "_previous"
LISTING = f"{PREVIOUS_DIR}/_files.json"


def can_set_aside(out: Dir) -> bool:
    return isinstance(out.fs, pafs.LocalFileSystem)


def set_aside(out: Dir, files: list[str], new_plan: str, first: str) -> None:
    """Move `files` (relative to `out`) under `_previous/`, `first` (the manifest) before the others."""
    out.write_json(LISTING, {"plan": new_plan, "files": sorted(files)})
    for rel in sorted(files, key=lambda name: name != first):
        _move(out, rel, f"{PREVIOUS_DIR}/{rel}")


def recover(out: Dir, succeeded: Callable[[str], bool], is_kept: Callable[[str], bool]) -> None:
    """Finish what a run left: delete `_previous/` if a task of the run's plan succeeded (`succeeded(plan)`), else
    put the previous output back. `is_kept(rel)`: files that are neither output nor junk (the lock)."""
    if not out.exists(PREVIOUS_DIR):
        return
    if not out.exists(LISTING):  # killed before anything was moved
        out.delete(PREVIOUS_DIR)
        return
    listing = out.read_json(LISTING)
    if succeeded(listing["plan"]):
        out.delete(PREVIOUS_DIR)
        return
    listed = set(listing["files"])
    for rel in files_under(out):
        if not rel.startswith(f"{PREVIOUS_DIR}/") and rel not in listed and not is_kept(rel):
            out.fs.delete_file(out.path(rel))
    for rel in sorted(listed):
        if out.exists(f"{PREVIOUS_DIR}/{rel}"):
            _move(out, f"{PREVIOUS_DIR}/{rel}", rel)
    out.delete(PREVIOUS_DIR)


def files_under(out: Dir) -> list[str]:
    """Every file under `out`, relative to it."""
    selector = pafs.FileSelector(out.path(), recursive=True, allow_not_found=True)
    root = len(out.path()) + 1
    return sorted(i.path[root:] for i in out.fs.get_file_info(selector) if i.type == pafs.FileType.File)


def _move(out: Dir, source: str, target: str) -> None:
    out.makedirs(target.rpartition("/")[0])
    out.fs.move(out.path(source), out.path(target))
