"""What a change does to an object's metadata, by the rules ext4 follows.

The FUSE handlers (readwrite.py) decide that something changes and journal it;
this module says what the new attributes are: the mode, group and ACLs of a new
object, and the attribute changes a setattr or an xattr call makes. Each result
is a `changes` dict as the journal's "attr" record carries it, ctime included
(ext4 moves ctime on every change of an inode; atime moves only when set, as
runtime mounts are noatime).

Permission checks are not here: a runtime mount leaves them to the kernel
(default_permissions), which refuses a call before it reaches the daemon.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from typing import Any

from layerfs.layer.index import DIRECTORY, SYMLINK
from layerfs.union import acl
from layerfs.union.tree import Node


def new_object(parent: Node, kind: str, mode: int, uid: int, gid: int,
               umask: int) -> tuple[int, int, int, dict[bytes, bytes] | None]:
    """(permission bits, uid, gid, xattrs) of an object that a caller with fsuid `uid`,
    fsgid `gid` and `umask` makes in `parent`, asking for `mode`.

    The kernel leaves the umask to the file system (FUSE_CAP_DONT_MASK): it must
    not apply where the parent's default ACL decides the mode instead. A setgid
    parent gives its group (and, to directories, its setgid bit)."""
    if parent.mode & stat.S_ISGID:
        gid = parent.gid
    if kind == SYMLINK:
        return 0o777, uid, gid, None
    xattrs: dict[bytes, bytes] = {}
    default = parent.xattrs.get(acl.DEFAULT) if parent.xattrs else None
    if default is not None:
        perm, access = acl.inherit(default, mode)
        if access is not None:
            xattrs[acl.ACCESS] = access
        if kind == DIRECTORY:
            xattrs[acl.DEFAULT] = default
    else:
        perm = stat.S_IMODE(mode) & ~umask
    if kind == DIRECTORY and parent.mode & stat.S_ISGID:
        perm |= stat.S_ISGID
    return perm, uid, gid, xattrs or None


def attribute_changes(node: Node, mode: int | None, uid: int | None, gid: int | None,
                      atime_ns: int | None, mtime_ns: int | None, now: int) -> dict[str, Any]:
    """The changes of a setattr (chmod, chown, utimensat; a truncate's size is the
    caller's): what is given, an extended access ACL kept in step with a new mode,
    and ctime. Every setattr moves ctime, even chown(-1, -1)."""
    changes: dict[str, Any] = {}
    if mode is not None:
        changes["mode"] = stat.S_IMODE(mode)
        access = node.xattrs.get(acl.ACCESS) if node.xattrs else None
        if access is not None:
            changes["xattrs"] = {acl.ACCESS: acl.chmod(access, mode)}
    for key, value in (("uid", uid), ("gid", gid), ("atime_ns", atime_ns), ("mtime_ns", mtime_ns)):
        if value is not None:
            changes[key] = value
    changes["ctime_ns"] = now
    return changes


def xattr_changes(node: Node, name: bytes, value: bytes | None, now: int,
                  keeps_setgid: Callable[[], bool] = lambda: True) -> dict[str, Any]:
    """The changes of setting (or, with value None, removing) one xattr. An access ACL
    sets the mode and is kept only if it says more than the mode (acl.py), and clears
    setgid unless `keeps_setgid()` (the caller is in the file's group or holds
    CAP_FSETID); a default ACL belongs on directories only (EACCES elsewhere, as the
    kernel answers)."""
    changes: dict[str, Any] = {"ctime_ns": now}
    if value is not None and name == acl.ACCESS:
        mode, extended = acl.apply_access_acl(value, node.mode)
        if mode & stat.S_ISGID and not keeps_setgid():
            mode &= ~stat.S_ISGID
        if mode != node.mode:
            changes["mode"] = mode
        value = value if extended else None
    elif value is not None and name == acl.DEFAULT:
        if node.kind != DIRECTORY:
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))
        acl.parse(value)
    changes["xattrs"] = {name: value}
    return changes
