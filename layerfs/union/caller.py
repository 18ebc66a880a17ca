"""What the kernel knows about a caller and FUSE does not pass on: groups and capabilities.

A request carries the caller's fsuid, fsgid and pid only. One rule of ext4 needs
more: setting an access ACL clears the setgid bit unless the caller is in the
file's group or holds CAP_FSETID (posix_acl_update_mode), which the kernel
leaves to a FUSE file system. /proc/PID/status has both, as seen from the
daemon's user namespace, which is the mount's.
"""

from __future__ import annotations

import os

CAP_FSETID = 4


def in_group_or_capable(pid: int, gid: int) -> bool:
    """Whether the (blocked, so living) caller `pid` is in group `gid` or has CAP_FSETID.

    When that cannot be known (no pid: a caller from another pid namespace; its
    status unreadable) the answer is no, so the bit goes, as for any caller who
    cannot show the right. Capabilities count only in the daemon's own user
    namespace: a nested one's root holds them over its namespace, not over ours."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        same_namespace = os.readlink(f"/proc/{pid}/ns/user") == os.readlink("/proc/self/ns/user")
    except OSError:
        return False
    fsgid = int(fields["Gid"].split()[3])
    groups = {int(g) for g in fields.get("Groups", "").split()}
    capable = same_namespace and bool(int(fields["CapEff"], 16) >> CAP_FSETID & 1)
    return gid == fsgid or gid in groups or capable
