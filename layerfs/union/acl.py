"""POSIX access ACLs as ext4 stores them, so that a container behaves like overlayfs on ext4.

Tools such as `cp -a` and `tar --acls` set system.posix_acl_access on every file they
copy, usually with an ACL that only restates the mode (owner, group and other
entries). ext4 stores such an ACL as the mode and keeps no xattr; layerfs does the
same, or every copied file would carry an ACL xattr into `diff` and `commit`. An
extended ACL (named users or groups) is kept, and the mode follows it as on ext4:
owner bits from the owner entry, group bits from the mask, other bits from other.
"""

from __future__ import annotations

import errno
import struct

ACCESS = b"system.posix_acl_access"
_VERSION = 2
_USER_OBJ, _GROUP_OBJ, _MASK, _OTHER = 0x01, 0x04, 0x10, 0x20
_KNOWN_TAGS = {0x01, 0x02, 0x04, 0x08, 0x10, 0x20}
_ENTRY = struct.Struct("<HHI")


def apply_access_acl(value: bytes, mode: int) -> tuple[int, bool]:
    """(the new mode, whether the ACL must be kept as an xattr) for an access ACL set on
    an inode whose permission bits (with setuid, setgid, sticky) are `mode`. Raises OSError(EINVAL) for a malformed ACL, as the kernel does."""
    if len(value) < 4 or (len(value) - 4) % _ENTRY.size or int.from_bytes(value[:4], "little") != _VERSION:
        raise OSError(errno.EINVAL, "malformed POSIX ACL")
    perms: dict[int, int] = {}
    for offset in range(4, len(value), _ENTRY.size):
        tag, perm, _id = _ENTRY.unpack_from(value, offset)
        if tag not in _KNOWN_TAGS or perm & ~7:
            raise OSError(errno.EINVAL, "malformed POSIX ACL")
        perms[tag] = perm
    if not {_USER_OBJ, _GROUP_OBJ, _OTHER} <= set(perms):
        raise OSError(errno.EINVAL, "POSIX ACL without owner, group or other entry")
    extended = set(perms) != {_USER_OBJ, _GROUP_OBJ, _OTHER}
    if extended and _MASK not in perms:
        raise OSError(errno.EINVAL, "extended POSIX ACL without a mask entry")
    group = perms[_MASK] if extended else perms[_GROUP_OBJ]
    return (mode & 0o7000) | perms[_USER_OBJ] << 6 | group << 3 | perms[_OTHER], extended
