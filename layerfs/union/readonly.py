"""FUSE operations serving a merged tree read-only.

Speed comes from letting the kernel answer: image layers never change under a
mount, so entries, attributes and negative lookups are cached for as long as
the kernel will keep them, readdir hands attributes over with the names
(readdirplus, so `ls -l` and `find` cost no lookups), opens and directory opens
cost no request at all (zero-message open, see ZERO_MESSAGE_OPEN) while page
caches and listings stay cached, and reads return memoryviews over an mmap of
the payload file instead of copies. Each attribute object is built once per inode.

Who may enter and who checks permissions depends on the kind of mount (see
access.py): a browse mount checks nothing for the one user who may enter, a
runtime mount lets the kernel check everything, ACLs included.
"""

from __future__ import annotations

import errno
import mmap
import os
from collections import OrderedDict

import pyfuse3

from layerfs.layer.index import NAME_MAX, REGULAR
from layerfs.union.access import MountKind
from layerfs.union.tree import MergedTree, Node

FOREVER = 1e9  # seconds; what fuse-overlayfs uses for "never changes"
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT
PREFETCH = 4 << 20  # bytes read ahead on the payload file during sequential reads
MAPPED_FILES = 256  # payload maps kept open between reads (no-open mode has no release)
# Files this small are read with one pread per request: cheaper than setting up a map
# that would serve one or two requests. Larger ones are mapped once and sliced.
SMALL_FILE = 256 << 10
# With scripts/patches applied, pyfuse3 passes the inode where the kernel sends file
# handle 0, so open and opendir can answer ENOSYS: the kernel then sends neither
# OPEN/RELEASE nor OPENDIR/RELEASEDIR again and keeps page caches and listings
# (FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR), which is right for layers that never change.
ZERO_MESSAGE_OPEN = getattr(pyfuse3, "NO_OPEN_PASSES_INODE", False)


def _attributes(node: Node) -> pyfuse3.EntryAttributes:
    attr = pyfuse3.EntryAttributes()
    attr.st_ino = node.ino
    attr.generation = 0
    attr.entry_timeout = FOREVER
    attr.attr_timeout = FOREVER
    attr.st_mode = node.st_mode
    attr.st_nlink = node.nlink
    attr.st_uid = node.uid
    attr.st_gid = node.gid
    attr.st_rdev = node.rdev
    attr.st_size = len(node.target) if node.target else node.size
    attr.st_blksize = 4096
    attr.st_blocks = (node.size + 511) // 512
    attr.st_mtime_ns = node.mtime_ns
    attr.st_atime_ns = node.atime_ns
    attr.st_ctime_ns = node.ctime_ns
    return attr


def _pread(path: str, off: int, size: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.pread(fd, size, off)
    finally:
        os.close(fd)


def _map(path: str) -> memoryview:
    """A read-only memoryview over a payload file (replies then copy straight from it)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        mapped = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    mapped.madvise(mmap.MADV_SEQUENTIAL)
    return memoryview(mapped)


class ReadOnlyOperations(pyfuse3.Operations):
    # Symlink targets never change either: let the kernel keep them (patched pyfuse3 only).
    enable_symlink_cache = True

    def __init__(self, tree: MergedTree, kind: MountKind) -> None:
        super().__init__()
        # A runtime mount negotiates POSIX ACLs: the kernel then reads them (getxattr)
        # and enforces them, and turns default_permissions on.
        self.enable_acl = kind.runtime
        self.tree = tree
        self.nodes = tree.nodes
        self.mapped: OrderedDict[int, memoryview] = OrderedDict()
        negative = pyfuse3.EntryAttributes()
        negative.st_ino = 0
        negative.entry_timeout = FOREVER
        self.negative = negative
        self.listings: dict[int, list[tuple[bytes, Node]]] = {}
        self.bytes_used: int | None = None  # counted on the first statfs: the image never changes

    def attr(self, node: Node) -> pyfuse3.EntryAttributes:
        cached = node.cache
        if cached is None:
            cached = node.cache = _attributes(node)
        return cached  # type: ignore[return-value]

    def node(self, inode: int) -> Node:
        try:
            node = self.nodes[inode]
        except IndexError:
            node = None
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return node

    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        parent = self.node(parent_inode)
        if len(name) > NAME_MAX:
            # FUSE lets names of up to 1024 bytes through; ext4 and overlayfs stop at 255.
            # The kernel looks every new name up before it creates, links or renames to it.
            raise pyfuse3.FUSEError(errno.ENAMETOOLONG)
        if name == b".":
            return self.attr(parent)
        if name == b"..":
            return self.attr(parent.parent or parent)
        child = parent.children.get(name) if parent.children is not None else None
        if child is None:
            return self.negative  # cached by the kernel like a positive entry
        return self.attr(child)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self.attr(self.node(inode))

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        node = self.node(inode)
        if not node.target:
            raise pyfuse3.FUSEError(errno.EINVAL)
        return node.target

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        if ZERO_MESSAGE_OPEN:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        listing = self.listings.get(fh)
        if listing is None:
            # The tree never changes, so one listing per directory serves every stream.
            node = self.node(fh)
            if node.children is None:
                raise pyfuse3.FUSEError(errno.ENOTDIR)
            listing = [(b".", node), (b"..", node.parent or node), *node.children.items()]
            self.listings[fh] = listing
        for position in range(start_id, len(listing)):
            name, child = listing[position]
            if not pyfuse3.readdir_reply(token, name, self.attr(child), position + 1):
                break

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if flags & WRITE_FLAGS:
            raise pyfuse3.FUSEError(errno.EROFS)
        if ZERO_MESSAGE_OPEN:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    async def read(self, fh: int, off: int, size: int) -> memoryview | bytes:
        view = self.mapped.get(fh)
        if view is not None:
            self.mapped.move_to_end(fh)
        else:
            node = self.node(fh)
            try:
                if node.size <= SMALL_FILE:
                    return _pread(node.payload, off, size) if node.payload else b""
                view = self._map(fh, node.payload)
            except OSError as e:
                raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        ahead = off + PREFETCH
        if off % PREFETCH == 0 and ahead < view.nbytes:
            # Start the disk on the next stretch now, so it streams while requests are served.
            view.obj.madvise(mmap.MADV_WILLNEED, ahead, min(PREFETCH, view.nbytes - ahead))  # type: ignore[union-attr]
        return view[off:off + size]

    def _map(self, inode: int, path: str) -> memoryview:
        view = self.mapped[inode] = _map(path)
        if len(self.mapped) > MAPPED_FILES:
            self.mapped.popitem(last=False)  # the map closes when its last view goes
        return view

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        xattrs = self.node(inode).xattrs
        if not xattrs or name not in xattrs:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return xattrs[name]

    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        return list(self.node(inode).xattrs or ())

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        stats = pyfuse3.StatvfsData()
        if self.bytes_used is None:
            self.bytes_used = sum(n.size for n in self.nodes[1:] if n is not None and n.kind == REGULAR)
        used = self.bytes_used
        stats.f_bsize = stats.f_frsize = 4096
        stats.f_blocks = (used + 4095) // 4096
        stats.f_bfree = stats.f_bavail = 0
        stats.f_files = len(self.nodes) - 1
        stats.f_ffree = stats.f_favail = 0
        stats.f_namemax = NAME_MAX
        return stats
