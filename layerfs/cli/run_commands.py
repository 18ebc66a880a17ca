"""Subcommands that run containers: run, create, start, stop, kill, restart, exec, logs,
wait, pause, unpause. Parse, call the launcher, print (main() turns the failures of
run, create, start and exec into docker's exit code 125)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from launcher import control
from launcher.config import parse_signal, process_spec
from launcher.console import console_socket, pump, raw_terminal, receive_console, window_follows, window_size, write_all
from launcher.init import EXIT_CANNOT_RUN, EXIT_NOT_FOUND, exit_status
from launcher.logs import STDERR, STDOUT, read_log
from launcher.monitor import Launch
from launcher.options import RunOptions, parse_volume
from launcher.state import read_state
from layerfs.cli.registry_commands import add_pull_options, image_or_pull
from layerfs.container.records import Container, Containers
from layerfs.errors import EXIT_LAUNCHER, Busy, LayerfsError
from layerfs.store.layout import Store


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The options of `run` and `create` (docker's names and meanings)."""
    p.add_argument("--name", help="a name for the container (default: IMAGE-<6 hex of its id>)")
    p.add_argument("-e", "--env", action="append", default=[], metavar="KEY[=VALUE]",
                   help="set a variable (KEY alone takes this shell's value); repeatable")
    p.add_argument("--env-file", action="append", default=[], type=Path, metavar="FILE",
                   help="read variables from FILE, one KEY=VALUE a line (# comments); repeatable")
    p.add_argument("-w", "--workdir", metavar="DIR", help="the working directory inside (made if missing)")
    p.add_argument("-u", "--user", metavar="USER[:GROUP]",
                   help="run as this user, by name (from the image's /etc/passwd, /etc/group) or id")
    p.add_argument("--entrypoint", metavar="CMD", help="replace the image's entrypoint (and its Cmd)")
    p.add_argument("-v", "--volume", action="append", default=[], metavar="SRC:DST[:ro]",
                   help="bind a host directory (absolute SRC) or a named volume (made on first use) "
                        "at DST; repeatable")
    p.add_argument("--read-only", action="store_true", help="mount the container's root read-only")
    p.add_argument("--hostname", metavar="NAME", help="the container's hostname (default: its short id)")
    p.add_argument("--network", choices=("host", "none"), default="host",
                   help="host: the host's network; none: a network of its own with only loopback")
    p.add_argument("--userns", choices=("auto", "single"), default="auto",
                   help="rootless id map: auto = your subordinate ids when /etc/subuid has some, "
                        "single = only your own id (as root)")
    p.add_argument("--security-opt", action="append", default=[], metavar="no-new-privileges",
                   help="no-new-privileges: setuid programs gain nothing (off by default, so su works)")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open to the container")
    p.add_argument("-t", "--tty", action="store_true", help="give the container a terminal (a pty)")
    add_pull_options(p)
    p.add_argument("image", metavar="IMAGE", help="the image, by name, digest or id; pulled when "
                                                  "the store lacks it (see --pull)")
    p.add_argument("command", metavar="COMMAND", nargs=argparse.REMAINDER,
                   help="the command and its arguments (default: the image's Entrypoint and Cmd)")


def _options(store: Store, args: argparse.Namespace, remove: bool | None) -> tuple[Container, RunOptions]:
    """The container `run` (remove: its --rm) or `create` (remove None) makes."""
    image = image_or_pull(store, args)
    for option in args.security_opt:
        if option not in ("no-new-privileges", "no-new-privileges=true"):
            raise LayerfsError(f"unsupported --security-opt {option!r}: only no-new-privileges is known")
    process = process_spec(image.config.get("config") or {}, args.command or None, args.entrypoint,
                           args.env, args.env_file, args.workdir, args.user, os.environ,
                           require_command=remove is not None)
    options = RunOptions(process, hostname=args.hostname or "", network=args.network,
                         volumes=tuple(parse_volume(v) for v in args.volume), read_only=args.read_only,
                         tty=args.tty, interactive=args.interactive, userns=args.userns,
                         no_new_privs=bool(args.security_opt), remove=bool(remove))
    with store.locked():
        container = Containers(store).create(image.id, image.digest, args.image, args.name, options.to_json(),
                                             durable=not remove)
    return container, options


def cmd_run(store: Store, args: argparse.Namespace) -> int:
    container, _ = _options(store, args, remove=args.rm)
    return _start(store, container, attach=not args.detach, shown=container.id)


def cmd_create(store: Store, args: argparse.Namespace) -> None:
    container, _ = _options(store, args, remove=None)
    print(container.id)


def cmd_start(store: Store, args: argparse.Namespace) -> int | None:
    code = None
    for ref in args.containers:
        container = Containers(store).resolve(ref)
        if not args.attach and read_state(Containers(store).path(container)).alive:
            print(ref)  # already running: nothing to do, as docker start
            continue
        code = _start(store, container, attach=args.attach, shown=ref)
        if not args.attach and code:  # its command could not start (126, 127)
            return code
    return code if args.attach else None


def _start(store: Store, container: Container, attach: bool, shown: str) -> int:
    """Run in the foreground (its status), or start a monitor in the background and
    print `shown` once the command runs: the id for `run -d`, the name given for
    `start`, as docker prints them. A command that cannot start exits as it would in
    the foreground (126, 127; 125 for the launcher's own failures)."""
    launch = Launch(store, container)
    if attach:
        return launch.run(detached=False)
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the monitor: a session of its own, outliving this command
        os.close(report_r)
        os.setsid()
        if os.fork():
            os._exit(0)
        os.chdir("/")  # keep no directory of the caller's busy
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)

        def started(failure: str | None) -> None:
            os.write(report_w, (failure or "0 ok").encode(errors="replace") + b"\n")
        try:
            launch.run(detached=True, on_started=started)
        except LayerfsError as e:
            os.write(report_w, f"{e.exit_code} {e.message}\n".encode(errors="replace"))
        except BaseException as e:  # noqa: BLE001 - a monitor has nobody else to tell
            os.write(report_w, f"{EXIT_LAUNCHER} the monitor failed: {e}\n".encode(errors="replace"))
        finally:
            os._exit(0)
    os.close(report_w)
    os.waitpid(pid, 0)
    with os.fdopen(report_r, "rb") as report:
        code_text, _, message = report.readline().decode(errors="replace").strip().partition(" ")
    code = int(code_text) if code_text.isdigit() else EXIT_LAUNCHER
    if code == 0:
        print(shown)
        return 0
    message = message or f"container {container.name} did not start"
    if code == Busy.exit_code:
        raise Busy(message)
    if code in (EXIT_CANNOT_RUN, EXIT_NOT_FOUND):
        print(f"layerfs: error: {message}", file=sys.stderr)
        return code
    raise LayerfsError(message)


def cmd_stop(store: Store, args: argparse.Namespace) -> None:
    containers = Containers(store)
    for ref in args.containers:
        container = containers.resolve(ref)
        control.stop(containers.path(container), container.name, _run_options(container), args.time)
        print(container.name)


def cmd_restart(store: Store, args: argparse.Namespace) -> None:
    containers = Containers(store)
    for ref in args.containers:
        container = containers.resolve(ref)
        control.stop(containers.path(container), container.name, _run_options(container), args.time)
        _start(store, container, attach=False, shown=ref)


def cmd_kill(store: Store, args: argparse.Namespace) -> None:
    containers = Containers(store)
    signum = parse_signal(args.signal)
    for ref in args.containers:
        container = containers.resolve(ref)
        control.send_signal(containers.path(container), container.name, signum)
        print(container.name)


def cmd_pause(store: Store, args: argparse.Namespace) -> None:
    _each(store, args.containers, control.pause)


def cmd_unpause(store: Store, args: argparse.Namespace) -> None:
    _each(store, args.containers, control.resume)


def _each(store: Store, refs: list[str], action) -> None:  # noqa: ANN001
    containers = Containers(store)
    for ref in refs:
        container = containers.resolve(ref)
        action(containers.path(container), container.name)
        print(container.name)


def cmd_wait(store: Store, args: argparse.Namespace) -> None:
    containers = Containers(store)
    for ref in args.containers:
        container = containers.resolve(ref)
        state = control.wait_finished(containers.path(container))
        print(state.exit_code if state.exit_code is not None else "")


def cmd_logs(store: Store, args: argparse.Namespace) -> None:
    containers = Containers(store)
    container = containers.resolve(args.container)
    directory = containers.path(container)
    follow = (lambda: control.monitor_running(directory)) if args.follow else None
    at_line_start = {STDOUT: True, STDERR: True}  # a cut line (P) continues without a new stamp
    for entry in read_log(directory, follow):
        stamp = args.timestamps and at_line_start.get(entry.stream, True)
        at_line_start[entry.stream] = entry.text.endswith(b"\n")
        line = (entry.timestamp + " ").encode() * stamp + entry.text
        if entry.stream == STDERR:
            sys.stderr.buffer.write(line)
            sys.stderr.flush()
        else:
            sys.stdout.write_bytes(line, flush=True)


def cmd_exec(store: Store, args: argparse.Namespace) -> int:
    containers = Containers(store)
    container = containers.resolve(args.container)
    if not args.command:
        raise LayerfsError("exec needs a command to run")
    directory = containers.path(container)
    options = _run_options(container)
    stdin = 0 if args.interactive else os.open(os.devnull, os.O_RDONLY)
    if args.tty:
        mine, theirs = console_socket()
        pid = control.exec_in(directory, container.name, options, args.command, args.user, args.workdir,
                              args.env, (stdin, 1, 2), (theirs.fileno(), window_size(0)))
        theirs.close()
        master = receive_console(mine)
        if master is not None:
            with raw_terminal(0), window_follows(0, master):
                pump({master: write_all(1)}, (0, master) if args.interactive else None)
    else:
        pid = control.exec_in(directory, container.name, options, args.command, args.user, args.workdir,
                              args.env, (stdin, 1, 2))
    saved = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the command itself
    try:
        _, status = os.waitpid(pid, 0)
    finally:
        signal.signal(signal.SIGINT, saved)
    return exit_status(status)


def _run_options(container: Container) -> RunOptions:
    if container.run is None:
        raise LayerfsError(f"container {container.name} was made by an older layerfs and cannot run")
    return RunOptions.from_json(container.run)
