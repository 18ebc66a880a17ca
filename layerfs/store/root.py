"""Where the store is when neither --root nor LAYERFS_ROOT says.

Kept apart from layout.py, and free of pathlib, because the CLI's client reads it
in its first milliseconds to find the service of that store."""

from __future__ import annotations

import os

from layerfs.identity import in_user_namespace


def default_root() -> str:
    if env := os.environ.get("LAYERFS_ROOT"):
        return env
    if os.geteuid() == 0 and not in_user_namespace():
        return "/var/lib/layerfs"
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data_home, "layerfs")
