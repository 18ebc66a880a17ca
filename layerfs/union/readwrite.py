"""FUSE operations for a container: the merged tree, writable through an upper layer.

Every change is an UpperLayer operation (journaled, replayed at the next mount).
Only data needs a copy-up: owners, modes, times and xattrs live in the tree, so
chmod, chown, utimens, setxattr and link on a lower file copy nothing. A write or
truncate copies the file into the upper layer first (atomically), and the inode
number never changes. Deletes simply drop the name from the merged tree; commit
turns that into whiteouts, and a directory made again over a deleted one is a new,
empty node, so no lower child can reappear.

The kernel may cache entries and attributes for as long as it likes, because
every change goes through this mount and each reply carries the new attributes.
Directory streams list a snapshot taken at opendir, so deleting while listing
(rm -rf) sees every entry once.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pyfuse3

from layerfs.layer.index import BLOCKDEV, CHARDEV, DIRECTORY, FIFO, REGULAR, SYMLINK
from layerfs.union.access import MountKind
from layerfs.union.caller import in_group_or_capable
from layerfs.union.metadata import attribute_changes, new_object, xattr_changes
from layerfs.union.readonly import ReadOnlyOperations
from layerfs.union.tree import SOCKET, MergedTree, Node
from layerfs.union.upper import UpperLayer, encode_xattrs

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
_KIND_OF_MODE = {stat.S_IFREG: REGULAR, stat.S_IFCHR: CHARDEV, stat.S_IFBLK: BLOCKDEV,
                 stat.S_IFIFO: FIFO, stat.S_IFSOCK: SOCKET}


def _fail(code: int) -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(code)


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def _disk_errors(handler: Handler) -> Handler:
    """Report a failure of the disk under the upper layer (ENOSPC, EDQUOT, EIO) to the
    caller as that errno. pyfuse3 ends the whole mount on any other exception."""
    @functools.wraps(handler)
    async def wrapped(*args: Any) -> Any:
        try:
            return await handler(*args)
        except OSError as e:
            raise _fail(e.errno or errno.EIO) from None
    return wrapped  # type: ignore[return-value]


class ReadWriteOperations(ReadOnlyOperations):
    enable_symlink_cache = True
    enable_dont_mask = True  # metadata.new_object applies the umask, or a default ACL

    def __init__(self, tree: MergedTree, upper: UpperLayer, kind: MountKind) -> None:
        super().__init__(tree, kind)
        self.upper = upper
        self.fds: dict[int, list[int]] = {}          # ino -> [fd, opens]
        self.dir_streams: dict[int, list[tuple[bytes, Node]]] = {}
        self.next_stream = 1

    # -- helpers ------------------------------------------------------------------------

    def child(self, parent: Node, name: bytes) -> Node | None:
        return parent.children.get(name) if parent.children is not None else None

    def directory(self, inode: int) -> Node:
        node = self.node(inode)
        if node.kind != DIRECTORY:
            raise _fail(errno.ENOTDIR)
        return node

    def _fd(self, node: Node) -> int:
        entry = self.fds.get(node.ino)
        if entry is None:
            entry = self.fds[node.ino] = [os.open(node.payload, os.O_RDWR | os.O_CLOEXEC), 0]
        return entry[0]

    def _make(self, parent_inode: int, name: bytes, kind: str, mode: int, ctx: pyfuse3.RequestContext,
              rdev: int = 0, target: bytes = b"") -> Node:
        parent = self.directory(parent_inode)
        if self.child(parent, name) is not None:
            raise _fail(errno.EEXIST)
        perm, uid, gid, xattrs = new_object(parent, kind, mode, ctx.uid, ctx.gid, ctx.umask)
        ino = self.upper.new_ino()

        def record(t: int) -> None:
            op = ["create", parent.ino, os.fsdecode(name), kind, perm, uid, gid, rdev,
                  os.fsdecode(target), ino, t]
            if xattrs:
                op.append(encode_xattrs(xattrs))  # inherited ACLs, in the same record
            self.upper.record(op)

        if kind != REGULAR:
            record(self.upper.now())
            return self.nodes[ino]  # type: ignore[return-value]
        path = self.upper.data_path(ino)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            record(self.upper.observe(os.fstat(fd).st_mtime_ns))  # the data file's stamp is its mtime
        except OSError:
            os.close(fd)
            os.unlink(path)
            raise
        self.fds[ino] = [fd, 0]  # create() counts its open; mknod() closes it at once
        return self.nodes[ino]  # type: ignore[return-value]

    # -- creating -----------------------------------------------------------------------

    @_disk_errors
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        kind = _KIND_OF_MODE.get(stat.S_IFMT(mode))
        if kind is None:
            raise _fail(errno.EINVAL)
        node = self._make(parent_inode, name, kind, mode, ctx, rdev=rdev)
        if kind == REGULAR:
            os.close(self.fds.pop(node.ino)[0])  # made, not opened
        return self.attr(node)

    @_disk_errors
    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self.attr(self._make(parent_inode, name, DIRECTORY, mode | stat.S_IFDIR, ctx))

    @_disk_errors
    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self.attr(self._make(parent_inode, name, SYMLINK, 0o777, ctx, target=target))

    @_disk_errors
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        node = self._make(parent_inode, name, REGULAR, mode, ctx)
        return self._open(node), self.attr(node)

    @_disk_errors
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self.node(inode)
        parent = self.directory(new_parent_inode)
        if node.kind == DIRECTORY:
            raise _fail(errno.EPERM)
        if self.child(parent, new_name) is not None:
            raise _fail(errno.EEXIST)
        self.upper.record(["link", node.ino, parent.ino, os.fsdecode(new_name), self.upper.now()])
        return self.attr(node)

    # -- removing and renaming -----------------------------------------------------------

    def _existing(self, parent_inode: int, name: bytes) -> tuple[Node, Node]:
        """(directory, the node it has under `name`), or ENOENT."""
        parent = self.directory(parent_inode)
        node = self.child(parent, name)
        if node is None:
            raise _fail(errno.ENOENT)
        return parent, node

    @_disk_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        parent, node = self._existing(parent_inode, name)
        if node.kind == DIRECTORY:
            raise _fail(errno.EISDIR)
        self.upper.record(["remove", parent.ino, os.fsdecode(name), self.upper.now()])
        self._forget_data_if_gone(node)

    @_disk_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        parent, node = self._existing(parent_inode, name)
        if node.kind != DIRECTORY:
            raise _fail(errno.ENOTDIR)
        if node.children:
            raise _fail(errno.ENOTEMPTY)
        self.upper.record(["remove", parent.ino, os.fsdecode(name), self.upper.now()])

    @_disk_errors
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: pyfuse3.RequestContext) -> None:
        if flags & RENAME_EXCHANGE:
            raise _fail(errno.EINVAL)
        old_parent, node = self._existing(parent_inode_old, name_old)
        new_parent = self.directory(parent_inode_new)
        target = self.child(new_parent, name_new)
        if target is node:
            return
        if target is not None:
            if flags & RENAME_NOREPLACE:
                raise _fail(errno.EEXIST)
            if node.kind == DIRECTORY and target.kind != DIRECTORY:
                raise _fail(errno.ENOTDIR)
            if node.kind != DIRECTORY and target.kind == DIRECTORY:
                raise _fail(errno.EISDIR)
            if target.kind == DIRECTORY and target.children:
                raise _fail(errno.ENOTEMPTY)
        ancestor: Node | None = new_parent
        while ancestor is not None:
            if ancestor is node:
                raise _fail(errno.EINVAL)  # a directory into its own subtree
            ancestor = ancestor.parent
        self.upper.record(["rename", old_parent.ino, os.fsdecode(name_old), new_parent.ino,
                           os.fsdecode(name_new), self.upper.now()])
        if target is not None:
            self._forget_data_if_gone(target)

    def _forget_data_if_gone(self, node: Node) -> None:
        """Delete a file's upper data once its last name is gone and nobody has it open."""
        if node.kind == REGULAR and node.nlink == 0 and node.upper and node.ino not in self.fds:
            os.unlink(node.payload)

    # -- attributes ------------------------------------------------------------------------

    @_disk_errors
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
                      fh: int | None, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self.node(inode)
        now = self.upper.now()
        changes = attribute_changes(
            node, mode=attr.st_mode if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None, now=now)
        if fields.update_size:
            if node.kind != REGULAR:
                raise _fail(errno.EINVAL)
            self.upper.copy_up(node, keep_data=attr.st_size > 0)
            os.truncate(node.payload, attr.st_size)
            self.mapped.pop(node.ino, None)
            changes["size"] = attr.st_size
            changes.setdefault("mtime_ns", now)
        if node.upper and node.kind == REGULAR and "mtime_ns" in changes:
            # The data file carries the mtime too (replay tells writes by it), stamped
            # first: a crash before the record then looks like a write, not the reverse.
            os.utime(self._fd(node) if node.ino in self.fds else node.payload,
                     ns=(changes["mtime_ns"], changes["mtime_ns"]))
        self.upper.change(node, changes)
        return self.attr(node)

    @_disk_errors
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext) -> None:
        node = self.node(inode)
        self.upper.change(node, xattr_changes(node, name, value, self.upper.now(),
                                              lambda: in_group_or_capable(ctx.pid, node.gid)))

    @_disk_errors
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        node = self.node(inode)
        if not node.xattrs or name not in node.xattrs:
            raise _fail(pyfuse3.ENOATTR)
        self.upper.change(node, xattr_changes(node, name, None, self.upper.now()))

    # -- directories -------------------------------------------------------------------------

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self.directory(inode)
        stream = self.next_stream
        self.next_stream += 1
        self.dir_streams[stream] = [(b".", node), (b"..", node.parent or node),
                                    *node.children.items()]  # type: ignore[union-attr]
        return stream

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        listing = self.dir_streams[fh]
        for position in range(start_id, len(listing)):
            name, child = listing[position]
            if not pyfuse3.readdir_reply(token, name, self.attr(child), position + 1):
                break

    async def releasedir(self, fh: int) -> None:
        self.dir_streams.pop(fh, None)

    @_disk_errors
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        self.upper.sync()

    # -- file data --------------------------------------------------------------------------

    def _open(self, node: Node) -> pyfuse3.FileInfo:
        if node.upper:
            self._fd(node)
            self.fds[node.ino][1] += 1
        return pyfuse3.FileInfo(fh=node.ino, keep_cache=True)

    @_disk_errors
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = self.node(inode)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC):
            self.upper.copy_up(node, keep_data=not flags & os.O_TRUNC)
            self.mapped.pop(node.ino, None)
            if flags & os.O_TRUNC:
                os.truncate(node.payload, 0)
                # the data file's own mtime, which is what a remount reads back
                stamp = self.upper.observe(os.stat(node.payload).st_mtime_ns)
                self.upper.change(node, {"size": 0, "mtime_ns": stamp, "ctime_ns": stamp})
        return self._open(node)

    @_disk_errors
    async def read(self, fh: int, off: int, size: int) -> memoryview | bytes:
        node = self.node(fh)
        if node.upper:
            return os.pread(self._fd(node), size, off)
        return await super().read(fh, off, size)

    @_disk_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        node = self.node(fh)
        if not node.upper:
            raise _fail(errno.EBADF)
        fd = self._fd(node)
        written = os.pwrite(fd, buf, off)
        node.size = max(node.size, off + written)
        # The kernel stamps the data file from its coarse clock; a remount reads that
        # stamp back, so serve the same one now rather than time.time_ns().
        node.mtime_ns = node.ctime_ns = self.upper.observe(os.fstat(fd).st_mtime_ns)
        node.cache = None
        return written

    @_disk_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        node = self.node(fh)
        if node.upper:
            (os.fdatasync if datasync else os.fsync)(self._fd(node))
        self.upper.sync()

    @_disk_errors
    async def release(self, fh: int) -> None:
        entry = self.fds.get(fh)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del self.fds[fh]
            os.close(entry[0])
            self._forget_data_if_gone(self.nodes[fh])  # type: ignore[arg-type]

    def close(self) -> None:
        """After unmounting: close data files and make the journal durable."""
        for fd, _opens in self.fds.values():
            os.close(fd)
        self.fds.clear()
        self.upper.close()

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        """The upper filesystem's space: that is where writes go."""
        found = os.statvfs(self.upper.dir)
        stats = pyfuse3.StatvfsData()
        for name in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                     "f_ffree", "f_favail", "f_namemax"):
            setattr(stats, name, getattr(found, name))
        return stats
