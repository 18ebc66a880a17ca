"""The service's workers: forked ahead of a request, handed it, watched until they end.

Each command runs in a worker forked from the warm service (worker.py). Even the
fork (2-3 ms of copying page tables for a 30 MiB interpreter) is kept off a
command's path: whenever no command runs, one worker is forked ahead and waits
(a spare), and the next request is handed to it over a socket pair. A spare is
forked after the caches were refreshed, so it sees what a fork at the request
would; when none is ready (commands at once), a worker is forked as the request
comes.

Every worker keeps that socket pair (its channel) to the service. A worker
whose command left work for after its answer (layerfs/handoff.py: a mount to
serve, a layer to delete) says so there before it answers, and from then on is
no command the service waits for, only a child it reaps.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from layerfs.service.wire import WireError, close_all, receive, send
from layerfs.service.worker import Runner, ready_worker, run_request, wait_for_request

# A spare is forked this long after the last command ended, not at once: the fork
# takes a CPU for 2-3 ms, which the command's caller needs just then (it exits, and
# its shell goes on: the `ls` after a mount); the next command's own Python start
# takes longer than this anyway.
SPARE_AFTER = 0.005


@dataclass
class Running:
    pid: int
    pidfd: int
    conn: socket.socket
    channel: socket.socket  # to and from the worker itself
    caller_gone: bool = False


@dataclass
class _Spare:
    pid: int
    pidfd: int
    channel: socket.socket  # the service's end: the request goes down it


class Workers:
    """The running commands' workers, the spare, and the workers gone on after their
    answer, all watched through the service's selector."""

    def __init__(self, selector: selectors.BaseSelector, runner: Runner, services_fds: list[int],
                 after_last: Callable[[], None]) -> None:
        self.selector = selector
        self.runner = runner
        self.services_fds = services_fds  # closed in every worker
        self.after_last = after_last      # when the last running command has ended
        self.running: dict[int, Running] = {}
        self._spare: _Spare | None = None
        self._spare_due: float | None = None
        self._detached: dict[int, int] = {}  # pid -> pidfd

    def start(self, conn: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
        """Run the request in the spare, or in a worker forked now if there is none."""
        spare, self._spare = self._spare, None
        if spare is not None and self._hand_over(spare, conn, request, fds):
            pid, pidfd, channel = spare.pid, spare.pidfd, spare.channel
        else:
            pid, channel = self._fork(lambda channel: run_request(conn, request, fds, self.runner, channel))
            pidfd = os.pidfd_open(pid)
        close_all(fds)
        running = Running(pid, pidfd, conn, channel)
        self.running[pid] = running
        self.selector.register(pidfd, selectors.EVENT_READ, lambda: self._reap(running))
        self.selector.register(conn, selectors.EVENT_READ, lambda: self._watch_caller(running))
        self.selector.register(channel, selectors.EVENT_READ, lambda: self._worker_says(running))

    # -- the spare ---------------------------------------------------------------------

    def fork_spare(self) -> None:
        """Fork the worker of the next request, ahead of it (once the caches are fresh)."""
        self._spare_due = None
        if self._spare is not None:
            return
        pid, channel = self._fork(lambda channel: wait_for_request(channel, self.runner))
        spare = self._spare = _Spare(pid, os.pidfd_open(pid), channel)
        self.selector.register(spare.pidfd, selectors.EVENT_READ, lambda: self._spare_died(spare))

    def timeout(self, idle: float | None) -> float | None:
        """How long the service may wait for an event: `idle`, or less when a spare is due."""
        if self._spare_due is None:
            return idle
        due = max(0.0, self._spare_due - time.monotonic())
        return due if idle is None else min(idle, due)

    def fork_spare_if_due(self) -> None:
        if self._spare_due is not None and time.monotonic() >= self._spare_due:
            self.fork_spare()

    def close(self) -> None:
        """At the service's end: the spare goes too (the others live on)."""
        self._spare_due = None
        spare, self._spare = self._spare, None
        if spare is not None:
            _end_spare(spare)

    def _hand_over(self, spare: _Spare, conn: socket.socket, request: dict[str, Any], fds: list[int]) -> bool:
        """Give the request to the spare; False if it is gone (killed meanwhile)."""
        self.selector.unregister(spare.pidfd)
        try:
            send(spare.channel, {"request": request}, [conn.fileno(), *fds])
        except OSError:
            _end_spare(spare)
            return False
        return True

    def _spare_died(self, spare: _Spare) -> None:
        if self._spare is spare:
            self._spare = None
            self.selector.unregister(spare.pidfd)
            _end_spare(spare)

    # -- forking -----------------------------------------------------------------------

    def _fork(self, child: Callable[[socket.socket], None]) -> tuple[int, socket.socket]:
        """Fork a worker, which closes what is the service's (and other workers') first;
        its pid and the service's end of its channel (the worker's end goes to `child`)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            try:
                signal.set_wakeup_fd(-1)
                ours.close()
                spare = [self._spare] if self._spare else []
                for fd in [*self.services_fds, *(r.pidfd for r in self.running.values()),
                           *self._detached.values(), *(s.pidfd for s in spare)]:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                for sock in [*(s for r in self.running.values() for s in (r.conn, r.channel)),
                             *(s.channel for s in spare)]:
                    with contextlib.suppress(OSError):
                        os.close(sock.detach())  # other callers' and workers' ends: not this command's
                ready_worker()
                child(theirs)
            finally:
                os._exit(1)
        theirs.close()
        return pid, ours

    # -- while they run ----------------------------------------------------------------

    def _worker_says(self, running: Running) -> None:
        """A message from a worker: it goes on with work its command left (a mount's
        server, a clean-up), no longer a command. It waits for the answer before it
        tells its caller the command is done, so that the caller's leaving is never
        taken for a hangup."""
        if running.pid not in self.running:
            return  # reaped in this same round: the event is stale
        try:
            got = receive(running.channel)
        except (OSError, WireError):
            got = None
        if got is None:  # it ended: the pidfd says how
            self.selector.unregister(running.channel)
            running.channel.close()
            return
        close_all(got[1])
        if not got[0].get("detached"):
            return
        self.selector.unregister(running.channel)
        with contextlib.suppress(OSError):
            send(running.channel, {"ok": True})
        running.channel.close()
        if not running.caller_gone:
            self.selector.unregister(running.conn)
        running.conn.close()
        self.selector.unregister(running.pidfd)
        del self.running[running.pid]
        self._detached[running.pid] = running.pidfd
        self.selector.register(running.pidfd, selectors.EVENT_READ, lambda: self._reap_detached(running.pid))
        self._ended()

    def _watch_caller(self, running: Running) -> None:
        """The caller's end became readable: it went away (killed), which a command
        run in-process would have gone with. Hang its command up, as a closed
        terminal does."""
        if running.pid not in self.running or running.caller_gone:
            return  # reaped in this same round: the event is stale
        try:
            data = running.conn.recv(1, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            return
        running.caller_gone = True
        self.selector.unregister(running.conn)
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(running.pidfd, signal.SIGHUP)

    def _reap(self, running: Running) -> None:
        """The worker ended: tell the caller how, in case the worker could not."""
        if running.pid not in self.running:
            return  # it went on after its answer in this same round: _reap_detached's now
        _, status = os.waitpid(running.pid, 0)
        self.selector.unregister(running.pidfd)
        os.close(running.pidfd)
        if running.channel.fileno() >= 0:
            self.selector.unregister(running.channel)
            running.channel.close()
        if not running.caller_gone:
            self.selector.unregister(running.conn)
            final = ({"signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status)
                     else {"exit": os.waitstatus_to_exitcode(status)})
            with contextlib.suppress(OSError):
                send(running.conn, final)
        running.conn.close()
        del self.running[running.pid]
        self._ended()

    def _reap_detached(self, pid: int) -> None:
        """A worker that went on after its answer ended (it is the service's child)."""
        pidfd = self._detached.pop(pid)
        self.selector.unregister(pidfd)
        os.close(pidfd)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)

    def _ended(self) -> None:
        """When no command runs any more: the caller's refresh, then the next spare a
        moment later (see SPARE_AFTER)."""
        if not self.running:
            self.after_last()
            self._spare_due = time.monotonic() + SPARE_AFTER


def _end_spare(spare: _Spare) -> None:
    spare.channel.close()
    with contextlib.suppress(OSError):
        signal.pidfd_send_signal(spare.pidfd, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(spare.pid, 0)
    os.close(spare.pidfd)
