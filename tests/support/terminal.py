"""Running the CLI with a terminal as its standard output, to prove a tar is never
written to one."""

from __future__ import annotations

import os
import pty
import subprocess
from typing import Any


def run_with_terminal_stdout(lfs: Any, *args: str) -> tuple[subprocess.CompletedProcess[str], bytes]:
    """`layerfs --root STORE ARGS...` as `lfs`'s identity with stdout on a fresh pty;
    returns the finished process (stderr as text) and whatever reached the terminal."""
    from conftest import LAYERFS_BIN

    controller, terminal = pty.openpty()
    try:
        proc = subprocess.run(lfs.wrap([LAYERFS_BIN, "--root", str(lfs.root), *args]),
                              stdout=terminal, stderr=subprocess.PIPE, env=lfs.env(),
                              cwd=lfs.workdir, timeout=60)
        os.set_blocking(controller, False)
        try:
            shown = os.read(controller, 1 << 16)
        except BlockingIOError:
            shown = b""
    finally:
        os.close(terminal)
        os.close(controller)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", proc.stderr.decode()), shown
