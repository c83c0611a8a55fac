"""Where tasks run: in this process, or as Ray tasks on an embedded Ray or a cluster.

`connect_ray(address)` is the one place webtext starts or joins Ray. With no address and no RAY_ADDRESS it starts
an embedded Ray whose every listener is on 127.0.0.1 (a plain `ray.init()` listens on all interfaces, and an open
Ray port lets anyone who reaches it run code). With an address it joins that cluster.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def connect_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster at `address` (or RAY_ADDRESS), or start an embedded loopback-only Ray; idempotent."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        # Read by ray_constants at import and by every process Ray spawns: the node address becomes 127.0.0.1.
        os.environ[LOOPBACK_ENV] = "0"
    elif "RAY_AUTH_MODE" not in os.environ and _has_auth_token():
        # Ray 2.60 clusters use token authentication; a client finds the token but uses it only when told to,
        # and reads the mode when ray is first imported.
        os.environ["RAY_AUTH_MODE"] = "token"
    import ray

    if ray.is_initialized():
        return
    if address is not None:
        ray.init(address=address, log_to_driver=True)
        _log_where_ray_logs()
        return
    import ray._private.ray_constants as ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # in case ray was imported before the variable was set
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        # AF_UNIX socket paths must stay under 108 bytes: a short directory under /tmp.
        _temp_dir=os.environ.get("WEBTEXT_RAY_TMP") or tempfile.mkdtemp(prefix="ray", dir="/tmp"),
        configure_logging=False,
    )
    _log_where_ray_logs()


def _log_where_ray_logs() -> None:
    """Ray keeps each process's own log in its session directory; the driver's log says where (jobs/console.py)."""
    import logging

    import ray

    try:
        where = ray._private.worker._global_node.get_logs_dir_path()
    except AttributeError:  # a Ray that keeps it elsewhere: the pointer is a convenience
        return
    logging.getLogger("webtext").info("Ray session logs: %s", where)


def _has_auth_token() -> bool:
    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                or os.path.exists(os.path.expanduser("~/.ray/auth_token")))


def run_local(fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
    """Run `fn` over `items` here, one after another."""
    for item in items:
        yield fn(item)


def run_on_ray(fn: Callable[[T], R], items: Iterable[T], num_cpus: float = 1, max_retries: int = 2) -> Iterator[R]:
    """Run `fn` over `items` as Ray tasks, yielding results as they finish (not in order).

    Retries cover lost workers; an exception raised by `fn` itself is not retried and is re-raised here as
    the original exception itself (see `unwrap`), so user-facing errors keep their type and one-line message.
    """
    import ray

    remote = ray.remote(num_cpus=num_cpus, max_retries=max_retries, retry_exceptions=False)(_apply)
    fn_ref = ray.put(fn)  # shipped once, not once per task
    pending = [remote.remote(fn_ref, item) for item in items]
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                yield ray.get(done[0])
            except ray.exceptions.RayTaskError as err:
                raise unwrap(err) from None
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def unwrap(err: BaseException) -> BaseException:
    """The exception a Ray task raised, without Ray's wrapper: its message alone, as raised; the remote traceback
    (without colour codes) is kept as a note, which a traceback shows (`--verbose`) and a one-line message does not."""
    import ray

    while isinstance(err, ray.exceptions.RayTaskError) and isinstance(err.cause, BaseException):
        # ray.get raises a subclass of both RayTaskError and the cause's class whose message is the whole
        # coloured remote traceback; its attributes other than `cause` are the cause's.
        remote = ANSI_ESCAPE.sub("", vars(err).get("traceback_str") or str(err)).rstrip()
        err = err.cause
        note = f"raised in a Ray task:\n{remote}"
        if remote and note not in getattr(err, "__notes__", ()):
            err.add_note(note)
    return err


def _apply(fn: Callable[[T], R], item: T) -> R:
    return fn(item)


def run_tasks(fn: Callable[[T], R], items: list[T], executor: str, **ray_options: Any) -> Iterator[R]:
    if executor == "local":
        return run_local(fn, items)
    if executor == "ray":
        return run_on_ray(fn, items, **ray_options)
    raise ValueError(f"unknown executor {executor!r}: use 'ray' or 'local'")
