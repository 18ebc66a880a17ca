"""SIGTERM and SIGHUP ending long work as Ctrl-C does, so its cleanup runs."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block a SIGTERM or SIGHUP raises KeyboardInterrupt (the CLI reports
    "interrupted", exit 130) instead of killing the process before the temporary
    files it made are removed."""
    handlers = {sig: signal.signal(sig, _interrupted) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
