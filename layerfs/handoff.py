"""Work a command leaves to its own process, to be done once its caller has its answer.

In-process, a command that must go on serving after it returns (the FUSE server
of a browse mount) forks, since the CLI has to exit for its caller to go on, and
what it cleans up (the layer of a `run --rm`) it cleans up before exiting. A
worker of the resident service need not do either: it reports the command's
status to the caller itself, so it can say "done" and then become that server,
sparing a fork of a 30 MiB interpreter (2-3 ms of a 20 ms mount), or delete what
its caller no longer sees. The worker says it can with `allow()`; the command
asks `allowed()` and leaves the work to `leave()`; the worker, once it has
answered, runs what `take()` gives it. A fork is never the process that answers.
"""

from __future__ import annotations

import os
from collections.abc import Callable

_allowed = False
_left: Callable[[], int] | None = None


def allow() -> None:
    """This process answers its caller before it exits (a service worker)."""
    global _allowed
    _allowed = True


def allowed() -> bool:
    return _allowed and _left is None


def leave(work: Callable[[], int]) -> None:
    """Run `work` (its result the process's exit status) once the command has answered."""
    global _left
    if not allowed():
        raise RuntimeError("nothing may be left to this process")
    _left = work


def take() -> Callable[[], int] | None:
    """What the command left, if anything (once)."""
    global _left
    work, _left = _left, None
    return work


def _forked() -> None:
    global _allowed, _left
    _allowed, _left = False, None


os.register_at_fork(after_in_child=_forked)
