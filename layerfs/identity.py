"""Who is running: root on the host, root inside a user namespace, or a user.

The answer decides where the default store is and what kind of mount a mount
is. Root inside a user namespace (`layerfs unshare`, a rootless container) is
still the user who made the namespace as far as the host is concerned: it
keeps that user's store, and its mounts are the container's runtime mounts.
"""

from __future__ import annotations

_INITIAL_UID_MAP = [(0, 0, 4294967295)]


def uid_map() -> list[tuple[int, int, int]]:
    """This user namespace's uid map: (first id inside, first id outside, count) each."""
    try:
        with open("/proc/self/uid_map") as f:
            return [tuple(map(int, line.split())) for line in f if line.strip()]  # type: ignore[misc]
    except OSError:
        return _INITIAL_UID_MAP


def in_user_namespace() -> bool:
    """Whether this process runs in a user namespace other than the initial one."""
    return uid_map() != _INITIAL_UID_MAP


def is_mapped(uid: int) -> bool:
    """Whether this namespace can name `uid`: an owner outside the map shows as the
    overflow id, which no process here can become (nor write as)."""
    return any(inside <= uid < inside + count for inside, _outside, count in uid_map())
