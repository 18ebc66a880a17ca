"""The `layerfs` program: hand the command to the resident service, or run it here.

The commands that start, enter, mount and list (see ROUTED) go to the user's
service for their store, which runs them in a process forked from an
interpreter that has everything imported already; so this module imports
nothing of layerfs's until it knows the service cannot take the command. The
rest, and everything when LAYERFS_NO_SERVICE=1 (or inside a user namespace,
where mounts must be made in the caller's own namespaces), runs in-process, with
the same results.
"""

from __future__ import annotations

import os
import sys

from layerfs.errors import EXIT_ERROR, EXIT_LAUNCHER  # a leaf module: no imports of its own

ROUTED = frozenset({"run", "create", "start", "stop", "restart", "kill", "pause", "unpause", "wait", "exec",
                    "mount", "umount", "mounts", "ps", "rm", "images"})
LAUNCHES = frozenset({"run", "create", "start", "exec"})  # fail with 125, as docker's do
SERVICE_PROGRAM = "layerfs.cli.service_main"


def service_disabled() -> bool:
    return os.environ.get("LAYERFS_NO_SERVICE", "") not in ("", "0")


def routed_store(argv: list[str]) -> tuple[str, str] | None:
    """The store whose service should run `argv`, and the command's name; None to run
    it in-process."""
    if service_disabled():
        return None
    root: str | None = None
    at = 0
    while at < len(argv) and argv[at].startswith("-"):  # the options before the command
        if argv[at] == "--root" and at + 1 < len(argv):
            root, at = argv[at + 1], at + 2
        elif argv[at].startswith("--root="):
            root, at = argv[at][len("--root="):], at + 1
        else:
            return None  # --help and the like, or a usage error: said in-process
    if at >= len(argv) or argv[at] not in ROUTED or root == "":
        return None
    from layerfs.identity import in_user_namespace

    if in_user_namespace():
        return None
    if root is None:
        from layerfs.store.root import default_root

        root = default_root()
    return os.path.abspath(root), argv[at]


def service_command(store_root: str) -> list[str]:
    """How the client starts the service of `store_root` (arguments to this Python)."""
    return ["-m", SERVICE_PROGRAM, "--root", store_root]


def _exit_now(code: int) -> None:
    """Exit as the command did, without tearing the interpreter down (a millisecond or
    two of a 20 ms command): the client holds nothing that needs it but its streams."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def main() -> int:
    argv = sys.argv[1:]
    routed = routed_store(argv)
    if routed is not None:
        from layerfs.service import client

        store_root, command = routed
        lost = EXIT_LAUNCHER if command in LAUNCHES else EXIT_ERROR
        code = client.run(argv, store_root, service_command(store_root), lost)
        if code is not None:
            _exit_now(code)
    if sys.flags.no_site:  # the installed script runs with -S (scripts/setup): the rest needs site-packages
        import site

        site.main()
    from layerfs.cli.main import main as run_here

    return run_here(argv)


if __name__ == "__main__":
    sys.exit(main())
