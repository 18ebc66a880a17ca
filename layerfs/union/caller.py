"""What the kernel knows about a caller and FUSE does not pass on: groups and capabilities.

A request carries the caller's fsuid, fsgid and pid only. One rule of ext4 needs
more: setting an access ACL clears the setgid bit unless the caller is in the
file's group or holds CAP_FSETID (posix_acl_update_mode), which the kernel
leaves to a FUSE file system. /proc/PID/status has both, as seen from the
daemon's user namespace, which is the mount's.
"""

from __future__ import annotations

CAP_FSETID = 4


def in_group_or_capable(pid: int, gid: int) -> bool:
    """Whether the (blocked, so living) caller `pid` is in group `gid` or has CAP_FSETID.
    Unknown (its status unreadable) counts as yes: the bit then stays, as before."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return True
    fsgid = int(fields["Gid"].split()[3])
    groups = {int(g) for g in fields.get("Groups", "").split()}
    return gid == fsgid or gid in groups or bool(int(fields["CapEff"], 16) >> CAP_FSETID & 1)
