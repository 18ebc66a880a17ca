"""POSIX ACLs kept as ext4 keeps them, so that a container behaves like overlayfs on ext4.

On a runtime mount the kernel enforces ACLs, but with FUSE the file system keeps
them: it stores the xattrs, keeps mode and access ACL in step both ways, and
gives new objects the ACL their directory's default ACL prescribes. These are the
rules of the kernel's fs/posix_acl.c, which ext4 follows:

- an access ACL that only restates the mode (owner, group and other entries) is
  stored as the mode, with no xattr. Tools such as `cp -a` and `tar --acls` set
  one on every file they copy; keeping it would put an ACL xattr on every copied
  file in `diff` and `commit`;
- an extended ACL (named users or groups) is kept, and the mode follows it:
  owner bits from the owner entry, group bits from the mask, other bits from
  other; chmod changes those three entries in turn (posix_acl_chmod);
- an object made in a directory with a default ACL takes that ACL, masked by the
  mode asked for, and no umask (posix_acl_create); a directory also inherits the
  default ACL itself. Elsewhere the umask applies.

The xattr format: a 4-byte version (2), then (tag u16, perm u16, id u32) entries.
"""

from __future__ import annotations

import errno
import stat
import struct

ACCESS = b"system.posix_acl_access"
DEFAULT = b"system.posix_acl_default"
_VERSION = 2
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_NAMED = (USER, GROUP)
_ENTRY = struct.Struct("<HHI")
_HEADER = struct.Struct("<I")

Entry = list[int]  # [tag, perm, id]: mutable, the rules below adjust perms in place


def parse(value: bytes) -> list[Entry]:
    """The entries of an ACL xattr; OSError(EINVAL) for a malformed one, as the kernel says."""
    if len(value) < _HEADER.size or (len(value) - _HEADER.size) % _ENTRY.size \
            or _HEADER.unpack_from(value)[0] != _VERSION:
        raise OSError(errno.EINVAL, "malformed POSIX ACL")
    entries = [list(_ENTRY.unpack_from(value, offset))
               for offset in range(_HEADER.size, len(value), _ENTRY.size)]
    tags = [tag for tag, _perm, _id in entries]
    if any(tag not in (USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER) or perm & ~7
           for tag, perm, _id in entries):
        raise OSError(errno.EINVAL, "malformed POSIX ACL")
    if any(tags.count(tag) != 1 for tag in (USER_OBJ, GROUP_OBJ, OTHER)) or tags.count(MASK) > 1:
        raise OSError(errno.EINVAL, "POSIX ACL needs one owner, group and other entry")
    if any(tag in _NAMED for tag in tags) and MASK not in tags:
        raise OSError(errno.EINVAL, "extended POSIX ACL without a mask entry")
    return entries


def serialize(entries: list[Entry]) -> bytes:
    """The xattr for `entries`, in the kernel's order (by tag, then id)."""
    ordered = sorted(entries, key=lambda e: (e[0], e[2]))
    return _HEADER.pack(_VERSION) + b"".join(_ENTRY.pack(*e) for e in ordered)


def _find(entries: list[Entry], tag: int) -> Entry | None:
    return next((e for e in entries if e[0] == tag), None)


def _get(entries: list[Entry], tag: int) -> Entry:
    """An entry `parse` guarantees: the owner's, the owning group's or others'."""
    return next(e for e in entries if e[0] == tag)


def _group_class(entries: list[Entry]) -> Entry:
    """The entry that holds the group bits of the mode: the mask if there is one."""
    return _find(entries, MASK) or _get(entries, GROUP_OBJ)


def is_extended(entries: list[Entry]) -> bool:
    return any(e[0] in (*_NAMED, MASK) for e in entries)


def apply_access_acl(value: bytes, mode: int) -> tuple[int, bool]:
    """(the new mode, whether the ACL must be kept as an xattr) for an access ACL set on
    an inode whose permission bits (with setuid, setgid, sticky) are `mode`."""
    entries = parse(value)
    perms = _get(entries, USER_OBJ)[1] << 6 | _group_class(entries)[1] << 3 | _get(entries, OTHER)[1]
    return (mode & 0o7000) | perms, is_extended(entries)


def chmod(value: bytes, mode: int) -> bytes:
    """The extended access ACL after chmod to `mode`."""
    entries = parse(value)
    _get(entries, USER_OBJ)[1] = (mode >> 6) & 7
    _group_class(entries)[1] = (mode >> 3) & 7
    _get(entries, OTHER)[1] = mode & 7
    return serialize(entries)


def inherit(default: bytes, mode: int) -> tuple[int, bytes | None]:
    """A new object's (mode, access ACL or None) under a directory whose default ACL is
    `default`, for a create asking for `mode` (file type bits included)."""
    entries = parse(default)
    perms = stat.S_IMODE(mode) & 0o777
    for entry in entries:
        tag = entry[0]
        if tag == USER_OBJ:
            entry[1] &= perms >> 6
            perms &= (entry[1] << 6) | ~0o700
        elif tag == OTHER:
            entry[1] &= perms & 7
            perms &= entry[1] | ~0o7
    group = _group_class(entries)
    group[1] &= (perms >> 3) & 7
    perms &= (group[1] << 3) | ~0o70
    new_mode = (stat.S_IMODE(mode) & 0o7000) | (perms & 0o777)
    return new_mode, serialize(entries) if is_extended(entries) else None
