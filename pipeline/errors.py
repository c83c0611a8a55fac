"""The errors a user can cause or meet, and how each becomes one line.

`WebtextError` is the base of every error whose message alone tells the user what to fix (a config key, an input
file, an output that another command holds): the CLI catches it once and prints the message, exit code 2.
`user_message(err)` also turns the operating-system and Arrow errors a user meets (an `--out` that is a file, a
read-only or full disk, a file that is not Parquet) into one line naming the path; it returns None for anything
else, which is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import re


class WebtextError(Exception):
    """An error the user can act on; its message names the file, line or key."""


class StageError(WebtextError, RuntimeError):
    """A stage cannot run on these inputs or into this output (an unreadable input, an inconsistent output)."""


class ConfigError(WebtextError, ValueError):
    """A config a user wrote is wrong; the message names the file and key."""


class LockedError(WebtextError):
    """Another live command holds the output; the message names it."""


class FencedError(WebtextError):
    """A task of a run that no longer holds its output's lock (its driver died, or another run took over)."""


_OS_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a path component is a file, not a directory",
    errno.EISDIR: "is a directory",
    errno.ENOENT: "no such file or directory",
    errno.EEXIST: "already exists",
}


def user_message(err: BaseException) -> str | None:
    """One line for an error a user can act on, or None for one that is a bug."""
    if isinstance(err, WebtextError):
        return str(err)
    if isinstance(err, OSError):  # the machine, the disk, the network: never a bug of ours, always one line
        text = _first_line(err)
        if err.errno is None:  # raised with a message of its own (ours: "PATH: no such file ...")
            bare_path = isinstance(err, FileNotFoundError) and len(err.args) == 1 and " " not in text
            return f"{text}: {_OS_REASONS[errno.ENOENT]}" if bare_path else text  # pyarrow's FileNotFoundError(path)
        path = err.filename if err.filename is not None else _quoted(text)
        reason = _OS_REASONS.get(err.errno) or err.strerror or text
        return f"{path}: {reason}" if path else f"{reason} ({text})"
    import pyarrow as pa

    if isinstance(err, pa.ArrowInvalid):  # a file that is not what its name says; readers name it when they can
        return f"not a valid Arrow/Parquet input: {_first_line(err)}"
    return None


def _quoted(text: str) -> str | None:
    """The path in pyarrow's messages: "[Errno 20] Cannot create directory '/x/y'. Detail: ..." -> /x/y."""
    match = re.search(r"'([^']+)'", text)
    return match.group(1) if match else None


def _first_line(value) -> str:
    lines = str(value).strip().splitlines()
    return lines[0] if lines else type(value).__name__
