"""The errors of a stage's failed tasks, kept where `webtext status` finds them: `<out>/<stage>/_errors/<task>.json`.

A task that raises records its error (its plan, when, the exception's one-line message) before the error reaches
the driver, through the same fence as its other files: a task of a run that no longer holds the output records
nothing. The files are not output: no marker lists them, so the next run on the output deletes them with the rest
of what a failed run left.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pipeline.errors import user_message
from pipeline.storage import Dir

ERRORS_DIR = "_errors"


def describe(err: BaseException) -> str:
    """The error on one line: what the CLI would print, else its type and first line."""
    message = user_message(err)
    if message is None:
        first = next((line for line in str(err).splitlines() if line.strip()), "")
        message = f"{type(err).__name__}: {first}" if first else type(err).__name__
    return message


def record(out: Dir, task_id: str, plan: str, err: BaseException, before_commit: Callable[[], None]) -> None:
    """Keep `err` as the error of `task_id`; never raises (the task's own error is the one that matters)."""
    entry = {"task": task_id, "plan": plan, "error": describe(err), "type": type(err).__name__,
             "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        out.write_json(f"{ERRORS_DIR}/{task_id}.json", entry, before_commit=before_commit)
    except Exception:  # fenced out, or the disk that failed the task
        pass

