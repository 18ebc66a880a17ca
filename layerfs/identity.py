"""Who is running: root on the host, root inside a user namespace, or a user.

The answer decides where the default store is and what kind of mount a mount
is. Root inside a user namespace (`layerfs unshare`, a rootless container) is
still the user who made the namespace as far as the host is concerned: it
keeps that user's store, and its mounts are the container's runtime mounts.
"""

from __future__ import annotations

_INITIAL_UID_MAP = ["0", "0", "4294967295"]


def in_user_namespace() -> bool:
    """Whether this process runs in a user namespace other than the initial one."""
    try:
        with open("/proc/self/uid_map") as f:
            lines = f.read().split("\n")
    except OSError:
        return False
    return [line.split() for line in lines if line.strip()] != [_INITIAL_UID_MAP]
