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
    """An error the user can act on; its message names the file, line or key, and its `hint` says what to do (a
    class's hint is true of every error of the class; one raised with `hint=` says it more precisely)."""

    hint: str = ""

    def __init__(self, *args, hint: str | None = None):
        super().__init__(*args)
        if hint is not None:
            self.hint = hint  # in __dict__: it survives pickling (a Ray task's error)


class StageError(WebtextError, RuntimeError):
    """A stage cannot run on these inputs or into this output (an unreadable input, an inconsistent output)."""

    hint = ("fix or replace the input named above (or leave it out), then rerun the same command: a command refused "
            "before it starts leaves the output as it was, and a stopped one keeps its finished tasks")


class ConfigError(WebtextError, ValueError):
    """A config a user wrote is wrong; the message names the file and key."""

    hint = ("correct the key named above in the YAML file or the --set that gives it (the configs/ directory has "
            "an example of every config), then rerun")


class LockedError(WebtextError):
    """Another live command holds the output; the message names it."""

    hint = "let the other command finish (or stop it), then rerun this one; it resumes where that one left off"


class FencedError(WebtextError):
    """A task of a run that no longer holds its output's lock (its driver died, or another run took over)."""

    hint = ("another command took this output over (or this one lost its lease): let that one finish, or rerun this "
            "command once it has ended; finished tasks are kept")


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


_OS_HINTS = {
    errno.ENOSPC: "free space on that disk (or give --out on another), then rerun the same command: it resumes",
    errno.EDQUOT: "free space within your quota (or give --out elsewhere), then rerun the same command: it resumes",
    errno.EROFS: "give an --out on a disk you can write to",
    errno.EACCES: "give a path you may read (inputs) or write (--out), or change its permissions",
    errno.EPERM: "give a path you may read (inputs) or write (--out), or change its permissions",
    errno.ENOTDIR: "give --out (and inputs) a directory path, not a path through a file",
    errno.ENOENT: "check the path: an input must exist (quote a glob so that webtext expands it)",
}


def user_hint(err: BaseException) -> str | None:
    """What to do about an error `user_message` describes, where there is something true to say."""
    if isinstance(err, WebtextError):
        return err.hint or None
    if isinstance(err, OSError):
        if err.errno is None and isinstance(err, FileNotFoundError):
            return _OS_HINTS[errno.ENOENT]
        return _OS_HINTS.get(err.errno)
    import pyarrow as pa

    if isinstance(err, pa.ArrowInvalid):
        return ("that file is not the Parquet a stage writes: rebuild the stage it belongs to with --force, or "
                "leave it out of the inputs")
    return None


def _quoted(text: str) -> str | None:
    """The path in pyarrow's messages: "[Errno 20] Cannot create directory '/x/y'. Detail: ..." -> /x/y."""
    match = re.search(r"'([^']+)'", text)
    return match.group(1) if match else None


def _first_line(value) -> str:
    lines = str(value).strip().splitlines()
    return lines[0] if lines else type(value).__name__
