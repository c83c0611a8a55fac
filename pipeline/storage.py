"""Paths and URIs through pyarrow filesystems: a local path and `s3://bucket/dir` are used the same way.

`Dir` is a directory on some filesystem that knows how to write into itself atomically (a temporary name, then
a rename), read back, list and delete. `expand_inputs` turns user-given files, directories and globs into a
sorted list of `InputFile`s with the size and modification time that manifests fingerprint. The URI helpers
(`split_query`, `join`, `parent_uri`, `base_name`, `display_uri`) and `sha256_file` are the ones every layer uses:
the stages, training's remote storage and the jobs.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

TMP_PREFIX = ".tmp-"
CHUNK_BYTES = 8 << 20


def is_uri(location: str | Path) -> bool:
    """A URI (`s3://...`), not a local path; a `Path` is always local."""
    return isinstance(location, str) and "://" in location


def split_query(location: str) -> tuple[str, str]:
    """`s3://b/x?endpoint_override=h` -> ("s3://b/x", "endpoint_override=h"); local paths have no query."""
    if not is_uri(location):
        return location, ""
    parts = urlsplit(location)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")), parts.query


def join(location: str, *names: str) -> str:
    """Join path components onto a local path or URI, keeping a URI's query string (S3 endpoint options)."""
    base, query = split_query(location)
    joined = "/".join([base.rstrip("/"), *(n.strip("/") for n in names if n)])
    return f"{joined}?{query}" if query else joined


def parent_uri(uri: str) -> str:
    """The directory a URI lies in, its query kept."""
    base, query = split_query(uri)
    parent = base.rstrip("/").rpartition("/")[0]
    return f"{parent}?{query}" if query else parent


def base_name(location: str) -> str:
    """The last component of a path or URI (without the URI's query)."""
    return split_query(location)[0].rstrip("/").rpartition("/")[2]


def display_uri(location: str) -> str:
    """A location to show or record: a URI without its query (endpoint options) or user information (credentials)."""
    if not is_uri(location):
        return location
    parts = urlsplit(location)
    return urlunsplit((parts.scheme, parts.hostname or "", parts.path, "", ""))


def sha256_file(path: str | Path, fs: pafs.FileSystem | None = None) -> str:
    """The hex sha256 of a file's bytes: a local path, or a path on the filesystem `fs`."""
    digest = hashlib.sha256()
    with open(path, "rb") if fs is None else fs.open_input_stream(str(path), compression=None) as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and in-filesystem path for a local path or URI."""
    if is_uri(location):
        try:
            return pafs.FileSystem.from_uri(location)
        except pa.ArrowInvalid as err:  # an unknown scheme or a malformed URI: not a file that is not Parquet
            from pipeline.errors import StageError

            raise StageError(f"{split_query(location)[0]}: not a path or URI that webtext can open ({err})") from None
    return pafs.LocalFileSystem(), os.path.abspath(location)


def is_within(location: str, directory: str) -> bool:
    """Whether the file or directory at `location` lies under `directory` (both local paths or both URIs)."""
    inner, outer = (split_query(x)[0] if is_uri(x) else os.path.abspath(x) for x in (location, directory))
    return inner.startswith(outer.rstrip("/") + "/")


@dataclass(frozen=True)
class Dir:
    """A directory given as a local path or URI; every write into it is atomic."""

    location: str

    @cached_property
    def _fs_root(self) -> tuple[pafs.FileSystem, str]:
        return filesystem(self.location)

    @property
    def fs(self) -> pafs.FileSystem:
        return self._fs_root[0]

    def path(self, name: str = "") -> str:
        root = self._fs_root[1].rstrip("/")
        return f"{root}/{name}" if name else root

    def sub(self, name: str) -> Dir:
        return Dir(join(self.location, name))

    def uri(self, name: str) -> str:
        return join(self.location, name)

    def makedirs(self, name: str = "") -> None:
        self.fs.create_dir(self.path(name), recursive=True)

    def exists(self, name: str) -> bool:
        return self.fs.get_file_info(self.path(name)).type != pafs.FileType.NotFound

    def write_bytes(self, name: str, data: bytes, before_commit: Callable[[], None] | None = None) -> None:
        """Write `data` to `name` under a temporary name first, so readers see all of it or nothing.

        `before_commit` runs between the write and the rename and may refuse the commit by raising; on any error
        (a full disk, a refused commit) the temporary is removed and `name` is left as it was."""
        final = self.path(name)
        parent, _, base = final.rpartition("/")
        self.fs.create_dir(parent, recursive=True)
        tmp = f"{parent}/{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{base}"
        with self.removed_on_error(tmp, final):
            with self.fs.open_output_stream(tmp, compression=None) as out:
                out.write(data)
            if before_commit is not None:
                before_commit()
            self.fs.move(tmp, final)

    @contextmanager
    def removed_on_error(self, path: str, final: str) -> Iterator[None]:
        """Delete the file at `path` (the temporary of `final`) if the block raises; an OSError that names no
        file (pyarrow's "Error writing bytes to file" on a full disk) is raised again naming `final`."""
        try:
            yield
        except BaseException as err:
            try:
                self.fs.delete_file(path)
            except OSError:
                pass
            if isinstance(err, OSError):
                raise naming(err, final) from err
            raise

    def write_json(self, name: str, obj, before_commit: Callable[[], None] | None = None) -> None:
        self.write_bytes(name, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(), before_commit)

    def write_parquet(self, name: str, table: pa.Table, compression: str = "zstd",
                      before_commit: Callable[[], None] | None = None) -> None:
        sink = io.BytesIO()
        with pq.ParquetWriter(sink, table.schema, compression=compression) as writer:
            if table.num_rows:  # an empty table is a file of no row group: `datasets` fails on an empty row group
                writer.write_table(table)
        self.write_bytes(name, sink.getvalue(), before_commit)

    def read_bytes(self, name: str) -> bytes:
        with self.fs.open_input_stream(self.path(name), compression=None) as f:
            return f.read()

    def read_json(self, name: str):
        return json.loads(self.read_bytes(name))

    def read_parquet(self, name: str) -> pa.Table:
        return pq.read_table(self.path(name), filesystem=self.fs)

    def list(self, subdir: str = "", pattern: str = "*") -> list[str]:
        """Names (relative to this directory) of files directly under `subdir` matching `pattern`, sorted."""
        base = self.path(subdir)
        if self.fs.get_file_info(base).type != pafs.FileType.Directory:
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=False))
        names = [i.base_name for i in infos if i.type == pafs.FileType.File]
        prefix = f"{subdir.strip('/')}/" if subdir else ""
        return sorted(prefix + n for n in names if fnmatch.fnmatch(n, pattern))

    def delete(self, name: str) -> None:
        info = self.fs.get_file_info(self.path(name))
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(self.path(name))
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(self.path(name))

    def remove_temporaries(self) -> None:
        """Delete files left by writes that were killed before their rename."""
        if not self.exists(""):
            return
        for info in self.fs.get_file_info(pafs.FileSelector(self.path(), recursive=True)):
            if info.type == pafs.FileType.File and info.base_name.startswith(TMP_PREFIX):
                self.fs.delete_file(info.path)


def naming(err: OSError, path: str) -> OSError:
    """`err` with `path` as its file when it names none (pyarrow's "Error writing bytes to file" on a full disk),
    so that the one-line message says which file could not be written."""
    if err.errno is None or err.filename is not None:
        return err
    named = OSError(err.errno, os.strerror(err.errno), path)
    named.__cause__ = err
    return named


@dataclass(frozen=True, order=True)
class InputFile:
    """One input file and the fingerprint a manifest keeps of it."""

    uri: str
    size: int
    mtime_ns: int

    def open(self):
        """A binary stream over the file's raw bytes (pyarrow would otherwise decompress by extension)."""
        fs, path = filesystem(self.uri)
        return fs.open_input_stream(path, compression=None)

    @property
    def name(self) -> str:
        return base_name(self.uri)


def _hidden(path: str) -> bool:
    return any(part.startswith((".", "_")) for part in path.split("/") if part)


def expand_inputs(specs: list[str]) -> list[InputFile]:
    """Files, directories (recursively, skipping `_`/`.` entries) and globs -> sorted, de-duplicated files.

    Raises FileNotFoundError naming the first spec that matches nothing.
    """
    found: dict[str, InputFile] = {}
    for spec in specs:
        base, query = split_query(spec)
        fs, path = filesystem(spec)
        scheme = base[: base.index("://") + 3] if is_uri(base) else ""
        has_glob = any(ch in path for ch in "*?[")
        if has_glob:
            root = path[: min(path.index(ch) for ch in "*?[" if ch in path)].rpartition("/")[0] or "/"
            candidates = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
            infos = [i for i in candidates if i.type == pafs.FileType.File and fnmatch.fnmatch(i.path, path)]
        else:
            info = fs.get_file_info(path)
            if info.type == pafs.FileType.Directory:
                infos = [
                    i
                    for i in fs.get_file_info(pafs.FileSelector(path, recursive=True))
                    if i.type == pafs.FileType.File and not _hidden(i.path[len(path) :])
                ]
            else:
                infos = [info] if info.type == pafs.FileType.File else []
        if not infos:
            raise FileNotFoundError(f"{spec}: no such file, directory or matching files")
        for info in infos:
            uri = f"{scheme}{info.path}" if scheme else info.path
            if query:
                uri = f"{uri}?{query}"
            mtime = info.mtime_ns if info.mtime_ns is not None else 0
            found[uri] = InputFile(uri, info.size or 0, mtime)
    return sorted(found.values())
