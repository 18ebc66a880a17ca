"""One command, run in a process forked from the warm service, as the caller's own.

The worker takes on what made the caller's process what it was: its standard
streams (received as descriptors), working directory, environment and umask,
and the signal dispositions a fresh Python starts with. Then it runs the
command's usual code, so that a command gives the same output, files and exit
status through the service as in-process. It alone holds the connection to the
caller from here on, so that the service may stop or be killed meanwhile
without the command noticing; what it forks (mount servers, container monitors)
does not inherit the connection.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

import prctl

from layerfs import handoff
from layerfs.service.wire import WireError, receive, send

Runner = Callable[[list[str]], int]
SPARE_NAME = "layerfs-spare"  # what ps shows for a worker waiting for its request

_RESET = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD,
          signal.SIGALRM, signal.SIGWINCH)


def ready_worker() -> None:
    """What every worker is before it knows its request (a spare does this ahead): the
    signal dispositions a fresh Python starts with."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as Python starts: EPIPE, not death
    for signum in _RESET:
        signal.signal(signum, signal.SIG_DFL)


def wait_for_request(channel: socket.socket, runner: Runner) -> NoReturn:
    """A spare: wait for the service to hand over a request and its connection,
    then run it; exit when the service closes the channel instead (or dies: SIGKILL)."""
    parent = os.getppid()
    prctl.set_pdeathsig(signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(0)
    prctl.set_name(SPARE_NAME)
    try:
        got = receive(channel)
    except (OSError, WireError):
        got = None
    if got is None or "request" not in got[0] or not got[1]:
        os._exit(0)
    prctl.set_pdeathsig(0)  # a command outlives the service, as in-process
    message, (conn_fd, *fds) = got
    run_request(socket.socket(fileno=conn_fd), message["request"], fds, runner, channel)


def run_request(conn: socket.socket, request: dict[str, Any], fds: list[int], runner: Runner,
                channel: socket.socket) -> NoReturn:
    """Become the caller's command, run it, report its status, exit with it; or, when the
    command left work for after its answer (layerfs/handoff.py: a mount to serve, files
    to delete), leave the service and do it."""
    code = 1
    try:
        failure = _become_caller(request, fds)
        if failure:
            send(conn, {"fallback": failure})
            os._exit(0)
        os.register_at_fork(after_in_child=lambda: (_close_quietly(conn.detach()), _close_quietly(channel.detach())))
        handoff.allow()
        send(conn, {"pid": os.getpid()})
        code = _run(runner, list(request["run"]))
        left = handoff.take()
        if left is None:
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the caller leaving now changes nothing
        else:
            _leave_service(channel)
            _let_go_of_streams()  # a pipe the caller reads ends with its command, as in-process
        send(conn, {"exit": code})
        if left is not None:
            conn.close()
            code = left()
    except BaseException:  # noqa: BLE001 - nobody above a worker to tell but the caller's stderr
        _report_crash()
    finally:
        os._exit(code)


def _let_go_of_streams() -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)


def _leave_service(channel: socket.socket) -> None:
    """Tell the service this process goes on with work of its own, no longer a command it
    waits for, and hear it has understood (before the caller is told: see
    workers._worker_says)."""
    try:
        send(channel, {"detached": True})
        receive(channel)
    except (OSError, WireError):
        pass  # a service gone meanwhile sends no hangup either
    channel.close()


def _become_caller(request: dict[str, Any], fds: list[int]) -> str | None:
    """Take on the caller's streams, directory, environment and umask; why not, if not."""
    wanted = list(request.get("fds", []))
    if len(wanted) != len(fds):
        return "the standard streams did not arrive"
    given = dict(zip(wanted, fds))
    for fd in (0, 1, 2):
        if fd in given:
            os.dup2(given[fd], fd)
        else:
            _close_quietly(fd)
    for fd in fds:
        if fd not in (0, 1, 2):
            _close_quietly(fd)
    try:
        os.chdir(request["cwd"])
    except OSError as e:
        return f"cannot enter {request['cwd']}: {e.strerror}"
    os.environ.clear()
    os.environ.update(request["env"])
    os.umask(int(request["umask"]))
    sys.stdin, sys.stdout, sys.stderr = (_text_stream(0, "r", "strict"), _text_stream(1, "w", "strict"),
                                         _text_stream(2, "w", "backslashreplace"))
    sys.argv = ["layerfs", *request["run"]]
    prctl.set_name("layerfs")  # what ps shows, as for the command run in-process
    prctl.set_proctitle(" ".join(sys.argv))
    return None


def _text_stream(fd: int, mode: str, errors: str) -> Any:
    """A standard stream as Python makes it at start: None when the fd is closed;
    line-buffered on a terminal (stderr always)."""
    try:
        os.fstat(fd)
    except OSError:
        return None
    line = fd == 2 or os.isatty(fd)
    return open(fd, mode, buffering=1 if line else -1, encoding="utf-8", errors=errors, closefd=False)


def _run(runner: Runner, argv: list[str]) -> int:
    try:
        code = runner(argv)
    except SystemExit as e:  # argparse's --help and usage errors end this way
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except OSError:
            pass
    return code & 0xFF if code is not None else 0


def _report_crash() -> None:
    try:
        traceback.print_exc()
        sys.stderr.flush()
    except (OSError, AttributeError):
        pass


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
