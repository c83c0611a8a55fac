"""Training with its shards, run directory and checkpoints at URIs (s3://...): storage every machine reaches and
none mounts, so a multi-node run needs no shared filesystem.

A local path is used in place, exactly as before. A URI (`s3://bucket/dir?endpoint_override=...`, any pyarrow
filesystem, through `pipeline.storage`) is worked on through node-local disk, with the URI holding the truth:

- Shards (`fetch_shards`): each node fetches the files it needs once into a cache directory
  (`<cache>/shards/<hash of the directory URI>/`), one process at a time (a file lock; the others wait, then reuse),
  checks each file's size and, where the tokenize stage's `_manifest.json` records one, its sha256, and renames it
  into place; a `.<name>.verified` stamp lets the next run reuse it without reading it again. The loader then
  memory-maps the local copies.
- A run directory (`RunStore`): the ranks of a node write into one staging directory (`<cache>/runs/<hash>/run`); a
  checkpoint goes up tag by tag (every node the files its ranks wrote, `COMPLETE` last, by rank 0:
  training/checkpoint.py), metrics and exports after it. Resume lists the complete tags remotely and downloads the
  newest into each node's staging directory.
- Readers: a remote run, `checkpoints/` or `step_*` directory, or a Hugging Face directory, is mirrored into
  `<cache>/mirrors/<hash>/` with the same layout by `training.resolve`, so every reader works on a local path.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from pipeline.layout import MANIFEST
from pipeline.shards import HEADER_BYTES, INDEX_NAME, TOKEN_DTYPE, ShardError
from pipeline.storage import CHUNK_BYTES, Dir, display_uri, expand_inputs, is_uri, parent_uri, sha256_file

CACHE_ENV = "WEBTEXT_CACHE"
COMPLETE = "COMPLETE"  # written last into a checkpoint directory, its manifest (training/checkpoint.py)
REJECTED = "REJECTED"  # why resume set a checkpoint aside (its COMPLETE removed); gone when the step is saved again
FETCH_THREADS = 8


def cache_root() -> Path:
    """Where node-local copies live unless a config names a directory: $WEBTEXT_CACHE or ~/.cache/webtext."""
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/webtext").expanduser()


def location_key(uri: str) -> str:
    """A short name for a URI (its query included: another endpoint is other data)."""
    return hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16]


@contextlib.contextmanager
def node_lock(directory: Path):
    """Held by one process of this machine at a time (the others block): one downloader per node."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- shards -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RemoteFile:
    """A file to fetch and what its copy must match."""

    uri: str
    name: str
    size: int
    mtime_ns: int
    sha256: str | None  # from the tokenize stage's manifest; None where nothing records it


def _manifest_checksums(directory: Dir, has_manifest: bool | None = None) -> dict[str, dict]:
    """name -> {bytes, sha256} of a stage directory's parts; empty where there is no manifest (`has_manifest`:
    already known from a listing, else asked)."""
    if not (directory.exists(MANIFEST) if has_manifest is None else has_manifest):
        return {}
    return {part["name"]: part for part in directory.read_json(MANIFEST).get("parts", [])}


def _listing(directory: Dir) -> dict[str, pafs.FileInfo]:
    """Files directly under `directory` by name, in one request; empty if it is no directory (a file, a glob)."""
    try:
        infos = directory.fs.get_file_info(pafs.FileSelector(directory.path(), recursive=False,
                                                             allow_not_found=True))
    except (NotADirectoryError, OSError):
        return {}
    return {i.base_name: i for i in infos if i.type == pafs.FileType.File}


def remote_shards(spec: str, split: str) -> list[RemoteFile]:
    """The shard files a URI names for `split`: a tokenize output directory (its index.json, in its order), a glob
    (sorted) or one file; expected sizes and checksums from the stage's index and manifest where they exist.
    A directory costs three requests (a listing, the index, the manifest), what a run reusing its cache pays."""
    directory = Dir(spec)
    listed = _listing(directory)
    if listed:
        if INDEX_NAME not in listed:
            raise ShardError(f"{display_uri(spec)}: no {INDEX_NAME} (a tokenize output directory has one)")
        index = directory.read_json(INDEX_NAME)
        shards = index.get("splits", {}).get(split, {}).get("shards", [])
        checksums = _manifest_checksums(directory, MANIFEST in listed)
        files = []
        for shard in shards:
            name = shard["name"]
            if name not in listed:
                raise ShardError(f"{display_uri(directory.uri(name))}: listed in {INDEX_NAME} but not there")
            expected = checksums.get(name, {}).get("bytes", HEADER_BYTES + shard["tokens"] * TOKEN_DTYPE.itemsize)
            if listed[name].size != expected:
                raise ShardError(f"{display_uri(directory.uri(name))}: {listed[name].size} bytes, its index and "
                                 f"manifest say {expected}")
            files.append(RemoteFile(directory.uri(name), name, expected, listed[name].mtime_ns or 0,
                                    checksums.get(name, {}).get("sha256")))
        return files
    try:
        found = expand_inputs([spec])
    except FileNotFoundError:
        return []
    checksums_by_dir: dict[str, dict[str, dict]] = {}
    files = []
    for f in found:
        parent = parent_uri(f.uri)
        if parent not in checksums_by_dir:
            checksums_by_dir[parent] = _manifest_checksums(Dir(parent))
        sha256 = checksums_by_dir[parent].get(f.name, {}).get("sha256")
        files.append(RemoteFile(f.uri, f.name, f.size, f.mtime_ns, sha256))
    return files


def fetch_shards(spec: str, split: str, cache_dir: str | Path | None = None) -> list[str]:
    """Local, verified copies of the shards a URI names (see `remote_shards`), fetched once per machine."""
    files = remote_shards(spec, split)
    root = Path(cache_dir).expanduser() if cache_dir else cache_root() / "shards"
    return [str(p) for p in fetch_files(files, root)]


def fetch_files(files: list[RemoteFile], root: Path) -> list[Path]:
    """Each file into `root/<hash of its directory URI>/<name>`, by one process of the machine at a time, several
    files at once (one object store stream rarely fills a node's network)."""
    by_dir: dict[Path, list[RemoteFile]] = {}
    for f in files:
        by_dir.setdefault(root / location_key(parent_uri(f.uri)), []).append(f)
    local: dict[str, Path] = {}
    for directory, group in by_dir.items():
        remote = Dir(parent_uri(group[0].uri))  # one filesystem (one S3 client) for the directory's files
        with node_lock(directory), ThreadPoolExecutor(min(FETCH_THREADS, len(group))) as pool:
            for f, path in zip(group, pool.map(lambda f, remote=remote, directory=directory: _fetch_one(f, remote, directory), group)):
                local[f.uri] = path
    return [local[f.uri] for f in files]


def _stamp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.verified")


def _stamp(f: RemoteFile, path: Path, sha256: str | None) -> dict:
    stat = path.stat()
    return {"uri": display_uri(f.uri), "remote_size": f.size, "remote_mtime_ns": f.mtime_ns, "sha256": sha256,
            "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _cached_copy_is_good(f: RemoteFile, path: Path) -> bool:
    """The copy is this remote file's: its stamp matches the file as it is now (size, mtime) and the remote file
    (size, mtime, checksum). Without a matching stamp a copy of the right size is read and hashed once more."""
    if not path.is_file() or path.stat().st_size != f.size:
        return False
    stamp_file = _stamp_path(path)
    if stamp_file.is_file():
        try:
            stamp = json.loads(stamp_file.read_text())
        except ValueError:
            stamp = None
        if stamp is not None and stamp == _stamp(f, path, stamp.get("sha256")) and (
                f.sha256 is None or stamp["sha256"] == f.sha256):
            return True
    if f.sha256 is None:
        return False  # nothing to check the bytes against: fetch again rather than trust them
    if sha256_file(path) != f.sha256:
        return False
    stamp_file.write_text(json.dumps(_stamp(f, path, f.sha256)))
    return True


def _fetch_one(f: RemoteFile, remote: Dir, directory: Path) -> Path:
    path = directory / f.name
    if _cached_copy_is_good(f, path):
        return path
    tmp = directory / f".tmp-{uuid.uuid4().hex[:8]}-{f.name}"
    digest, size = hashlib.sha256(), 0
    try:
        # One pass: hashed as it arrives (reads, hashing and writes release the GIL, so files overlap in threads).
        with remote.fs.open_input_stream(remote.path(f.name), compression=None) as source, open(tmp, "wb") as out:
            while chunk := source.read(CHUNK_BYTES):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
        sha256 = digest.hexdigest() if f.sha256 is not None else None
        if size != f.size or sha256 != f.sha256:
            got = f"{size} bytes" + (f" with sha256 {sha256}" if sha256 else "")
            expected = f"{f.size} bytes" + (f" with sha256 {f.sha256}" if f.sha256 else "")
            raise ShardError(f"{display_uri(f.uri)}: fetched {got}, expected {expected}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _stamp_path(path).write_text(json.dumps(_stamp(f, path, sha256)))
    return path


# -- copying between a local directory and a remote one -------------------------------------------------------------
def upload(local: Path, remote: Dir, name: str) -> None:
    """`local` (a file or a directory, recursively) to `name` under `remote`. Each object of an object store
    appears whole; what marks a set of files complete is the caller's (a checkpoint's COMPLETE)."""
    pafs.copy_files(str(local), remote.path(name), source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=remote.fs, chunk_size=CHUNK_BYTES)


def download(remote: Dir, name: str, local: Path) -> bool:
    """`name` under `remote` (a file or a directory) to `local`, written under a temporary name and renamed.
    False if there is nothing by that name."""
    info = remote.fs.get_file_info(remote.path(name))
    if info.type == pafs.FileType.NotFound:
        return False
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{local.name}")
    try:
        if info.type == pafs.FileType.Directory:
            tmp.mkdir()  # copy_files makes the directories below it, not the one it copies into
        pafs.copy_files(remote.path(name), str(tmp), source_filesystem=remote.fs,
                        destination_filesystem=pafs.LocalFileSystem(), chunk_size=CHUNK_BYTES)
        _remove(local)
        os.replace(tmp, local)
    finally:
        _remove(tmp)
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def complete_tags(ckpt_root: Dir | Path) -> list[str]:
    """Tags (`step_*` directories) under a `checkpoints/` directory (local or remote) that hold COMPLETE, oldest
    first."""
    if isinstance(ckpt_root, Path):
        ckpt_root = Dir(str(ckpt_root))
    if ckpt_root.fs.get_file_info(ckpt_root.path()).type != pafs.FileType.Directory:
        return []
    infos = ckpt_root.fs.get_file_info(pafs.FileSelector(ckpt_root.path(), recursive=False))
    tags = [i.base_name for i in infos if i.type == pafs.FileType.Directory and i.base_name.startswith("step_")]
    return sorted(t for t in tags if ckpt_root.exists(f"{t}/{COMPLETE}"))


# -- a run directory that may be remote -----------------------------------------------------------------------------
class RunStore:
    """A run's `out_dir`: `local` is where this process reads and writes; when `out_dir` is a URI, `remote` is it
    and `local` is a node-local staging directory, `<staging_dir>/<hash of out_dir>/<role>` (`staging_dir` defaults
    to `<cache>/runs`); the ranks of one machine share role "run", a job's driver uses "driver"."""

    def __init__(self, out_dir: str | Path, staging_dir: str | None = None, role: str = "run"):
        self.location = str(out_dir)
        self.remote = Dir(self.location) if is_uri(self.location) else None
        if self.remote is None:
            self.local = Path(out_dir).resolve()
        else:
            base = Path(staging_dir).expanduser() if staging_dir else cache_root() / "runs"
            self.local = base / location_key(self.location) / role

    @property
    def shared_location(self) -> str:
        """out_dir as every process of the run names it, wherever it starts: the URI, or the absolute path."""
        return self.location if self.remote is not None else str(self.local)

    @property
    def ckpt_root(self) -> Path:
        return self.local / "checkpoints"

    def uri(self, name: str) -> str:
        """What to call `name` in a config a process on another machine reads: the remote URI, or the local path."""
        return self.remote.uri(name) if self.remote is not None else str(self.local / name)

    def push(self, *names: str) -> None:
        """Upload files or directories under `local` (those that exist) to the same names remotely."""
        if self.remote is None:
            return
        for name in names:
            if (self.local / name).exists():
                upload(self.local / name, self.remote, name)

    def pull(self, *names: str) -> None:
        """Download the named files or directories (those that exist remotely) over their local copies."""
        if self.remote is None:
            return
        for name in names:
            download(self.remote, name, self.local / name)

    def exists(self, name: str) -> bool:
        return self.remote.exists(name) if self.remote is not None else (self.local / name).exists()

    def read_text(self, name: str) -> str:
        return self.remote.read_bytes(name).decode() if self.remote is not None else (self.local / name).read_text()

    def write_text(self, name: str, text: str) -> None:
        """Write locally and, for a remote run, remotely (atomically in both places)."""
        self.local.mkdir(parents=True, exist_ok=True)
        tmp = self.local / f".tmp-{uuid.uuid4().hex[:8]}-{Path(name).name}"
        tmp.write_text(text)
        os.replace(tmp, self.local / name)
        if self.remote is not None:
            self.remote.write_bytes(name, text.encode())

    def delete(self, name: str) -> None:
        _remove(self.local / name)
        if self.remote is not None:
            self.remote.delete(name)

    def reset_staging(self) -> None:
        """Empty the staging directory: the remote run is the truth (what a killed run left here is not)."""
        if self.remote is not None:
            _remove(self.local)
            self.local.mkdir(parents=True, exist_ok=True)

    # The ranks that share a staging directory (those of one machine, whatever the launcher thinks a machine is) do
    # its part of each collective step once: the first to take the lock does it, the others find it done.
    def _staging_lock(self):
        return node_lock(self.local.parent)

    def open_attempt(self, attempt: str, tag: str | None) -> None:
        """For the run attempt named `attempt` (the same on every rank): an emptied staging directory holding the
        checkpoint `tag` to resume from, if any."""
        if self.remote is None:
            return
        with self._staging_lock():
            marker = self.local / ".attempt"
            if marker.is_file() and marker.read_text() == attempt:
                return
            self.reset_staging()
            if tag:
                self.pull_checkpoint(tag)
            marker.write_text(attempt)

    def drop_staged(self, tag: str) -> None:
        """The staged copy of a checkpoint, once uploaded or loaded."""
        if self.remote is not None:
            with self._staging_lock():
                shutil.rmtree(self.ckpt_root / tag, ignore_errors=True)

    # checkpoints
    def complete_tags(self) -> list[str]:
        return complete_tags(self.ckpt_root if self.remote is None else self.remote.sub("checkpoints"))

    def pull_checkpoint(self, tag: str) -> None:
        """All files of a remote checkpoint into staging (DeepSpeed reads every rank's ZeRO shards on load)."""
        if self.remote is not None and not download(self.remote, f"checkpoints/{tag}", self.ckpt_root / tag):
            raise FileNotFoundError(f"{display_uri(self.remote.uri(f'checkpoints/{tag}'))}: checkpoint not found")

    def push_checkpoint_files(self, tag: str, records) -> dict:
        """What the ranks sharing this staging directory wrote of a checkpoint (all of them have saved: a barrier
        came first): its whole staged copy, which has no COMPLETE yet (`mark_complete` comes after every upload).
        Returns `records(directory)` of what this rank uploaded (the first of the directory's ranks), else {}."""
        if self.remote is None:
            return {}
        with self._staging_lock():
            uploaded = self.ckpt_root / tag / ".uploaded"
            if uploaded.exists():
                return {}
            if (self.ckpt_root / tag / COMPLETE).exists():
                raise RuntimeError(f"{self.ckpt_root / tag}: COMPLETE before the upload; it must be uploaded last")
            # A copy staged to verify this tag on resume, then set aside, holds its REJECTED: not part of the new save.
            (self.ckpt_root / tag / REJECTED).unlink(missing_ok=True)
            found = records(self.ckpt_root / tag)
            upload(self.ckpt_root / tag, self.remote, f"checkpoints/{tag}")
            uploaded.write_text("")
            return found

    def delete_remote_checkpoint(self, tag: str) -> None:
        if self.remote is not None:
            self.remote.delete(f"checkpoints/{tag}")

    def mark_complete(self, tag: str, text: str) -> None:
        (self.ckpt_root / tag / REJECTED).unlink(missing_ok=True)  # remotely the tag was deleted before saving
        (self.ckpt_root / tag / COMPLETE).write_text(text)
        if self.remote is not None:
            self.remote.write_bytes(f"checkpoints/{tag}/{COMPLETE}", text.encode())

    def reject_checkpoint(self, tag: str, reason: str) -> None:
        """Set a complete checkpoint aside (it failed verification): REJECTED holds the reason and COMPLETE goes,
        so listings skip it; its files stay for inspection until the step is saved again."""
        local = self.ckpt_root / tag
        if local.is_dir():
            (local / REJECTED).write_text(f"{reason}\n")
            (local / COMPLETE).unlink(missing_ok=True)
        if self.remote is not None:
            self.remote.write_bytes(f"checkpoints/{tag}/{REJECTED}", f"{reason}\n".encode())
            self.remote.delete(f"checkpoints/{tag}/{COMPLETE}")

    def prune(self, keep_last: int) -> list[str]:
        """Delete complete checkpoints older than the newest `keep_last` (remotely for a remote run)."""
        old = self.complete_tags()[:-keep_last]
        for tag in old:
            if self.remote is not None:
                self.remote.delete(f"checkpoints/{tag}")
            shutil.rmtree(self.ckpt_root / tag, ignore_errors=True)
        return old
