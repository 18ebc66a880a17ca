"""`layerfs unshare`: a shell (or command) as root of the user's own user namespace."""

from __future__ import annotations

import argparse
import os
import sys

from layerfs.errors import LayerfsError
from layerfs.store.layout import Store


def cmd_unshare(store: Store | None, args: argparse.Namespace) -> int:
    """Returns the command's exit status, which becomes layerfs's."""
    from launcher.idmap import SUBGID, SUBUID, user_map
    from launcher.userns import run_unshared

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    argv = command or [os.environ.get("SHELL") or "/bin/sh"]
    if os.geteuid() == 0:
        raise LayerfsError("you are root already: run the command directly (unshare is for "
                           "users, who become root of their own user namespace)")
    idmap = user_map(os.getuid(), os.getgid(), single=args.single_id)
    if idmap.single and not args.single_id:
        print(f"layerfs: note: no subordinate ids for you in both {SUBUID} and {SUBGID}: only your "
              "own ids are mapped (as root); files of other owners show as nobody (65534) and "
              "cannot be written", file=sys.stderr)
    sys.stdout.flush()
    return run_unshared(argv, idmap)
