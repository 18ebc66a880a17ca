"""What a container is doing: created, running, paused or exited, with its pids and exit code.

The monitor of a running container writes `state.json` beside the container's
record; every other command reads it. A state that says running is only believed
while pid 1 is alive with the start time it had: a monitor killed with SIGKILL
takes its container with it (die-with-parent), and the next reader sees an exited
container, not a hung one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from layerfs.store.layout import write_atomic
from layerfs.timestamps import now_rfc3339
from layerfs.union.mounts import daemon_alive, process_start

STATE = "state.json"
STATE_LOCK = "state.lock"
CREATED, RUNNING, PAUSED, EXITED = "created", "running", "paused", "exited"
# The exit code of a container whose monitor died with it: killed, as by SIGKILL.
LOST = 137


@dataclass(frozen=True)
class State:
    status: str = CREATED
    pid: int = 0             # pid 1 of the container, as the host sees it
    pid_started: str = ""    # its start time, against pid reuse
    monitor: int = 0         # the process that waits for pid 1 and cleans up after it
    monitor_started: str = ""
    started_at: str = ""
    finished_at: str = ""
    exit_code: int | None = None

    @property
    def alive(self) -> bool:
        return self.status in (RUNNING, PAUSED)

    def running(self, pid: int, monitor: int) -> "State":
        return State(RUNNING, pid, process_start(pid), monitor, process_start(monitor), now_rfc3339(precise=True))

    @property
    def monitor_alive(self) -> bool:
        return bool(self.monitor) and daemon_alive(self.monitor) and process_start(self.monitor) == self.monitor_started

    def exited(self, code: int) -> "State":
        return replace(self, status=EXITED, pid=0, finished_at=now_rfc3339(precise=True), exit_code=code)


def recorded_state(directory: Path) -> State:
    """The state as its monitor last wrote it (created when there is none)."""
    try:
        return State(**json.loads((directory / STATE).read_text()))
    except (OSError, ValueError, TypeError):
        return State()


def read_state(directory: Path) -> State:
    """The container's state as it really is: a running one whose pid 1 is gone is exited."""
    state = recorded_state(directory)
    if state.alive and not (daemon_alive(state.pid) and process_start(state.pid) == state.pid_started):
        return state.exited(LOST)
    return state


def write_state(directory: Path, state: State) -> None:
    write_atomic(directory / STATE, json.dumps(asdict(state)).encode(), durable=False)


@contextlib.contextmanager
def state_locked(directory: Path) -> Iterator[None]:
    """For a read-change-write of the state (pause against the container's end): the
    one who writes last must have read what the other wrote."""
    fd = os.open(directory / STATE_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
