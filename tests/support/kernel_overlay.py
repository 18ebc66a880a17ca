"""The same layers through kernel overlayfs (or fuse-overlayfs): a second, independent oracle.

Root only: layer directories need real owners, device nodes and `trusted.*` xattrs.
Each OCI layer is extracted into its own directory in kernel-overlay format:

- `D/.wh.NAME`    -> character device 0/0 named `D/NAME`;
- `D/.wh..wh..opq` -> xattr `trusted.overlay.opaque=y` on D;
- a whiteout and an entry of the same name in one layer: the entry wins (a whiteout
  hides lower layers only); a directory entry there becomes opaque, because it must
  still hide the lower directory's children.

A parent directory that the layer does not list is created with the attributes the
layers below show at that path (as containerd's applier does), else 0755 root:root,
so that the merged view does not depend on how the tar happened to list parents.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

from .oci import decompress
from .oracle import OPAQUE, WHITEOUT_PREFIX, normalize, read_members
from .snapshot import Node, snapshot

OPAQUE_XATTR = "trusted.overlay.opaque"
_OVERLAY_XATTR_PREFIX = "trusted.overlay."
# mount(2) takes at most one page of options; relative lowerdirs keep 100+ layers under it
_MAX_MOUNT_OPTIONS = 4000

_DirAttrs = tuple[int, int, int, dict[str, bytes]]  # mode, uid, gid, xattrs
_DEFAULT_DIR: _DirAttrs = (0o755, 0, 0, {})


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def _ancestors(path: str) -> list[str]:
    """"/a/b/c" -> ["/", "/a", "/a/b"]."""
    parts = path.strip("/").split("/")[:-1] if path != "/" else []
    return ["/"] + ["/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _is_real_dir(p: Path) -> bool:
    return stat.S_ISDIR(os.lstat(p).st_mode)


def _is_whiteout(p: Path) -> bool:
    st = os.lstat(p)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)


def _is_opaque(p: Path) -> bool:
    try:
        return os.getxattr(p, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _image_xattrs(p: Path) -> dict[str, bytes]:
    return {name: os.getxattr(p, name, follow_symlinks=False)
            for name in os.listxattr(p, follow_symlinks=False)
            if not name.startswith(_OVERLAY_XATTR_PREFIX)}


def _set_xattrs(p: Path, xattrs: dict[str, bytes]) -> None:
    """Make the image xattrs of `p` exactly `xattrs`, leaving overlay's own ones alone."""
    for name in _image_xattrs(p):
        os.removexattr(p, name, follow_symlinks=False)
    for name, value in xattrs.items():
        os.setxattr(p, name, value, follow_symlinks=False)


def _set_dir_attrs(p: Path, attrs: _DirAttrs) -> None:
    mode, uid, gid, xattrs = attrs
    os.chown(p, uid, gid)
    os.chmod(p, mode)  # after chown, which clears setgid
    _set_xattrs(p, xattrs)


def _remove(p: Path) -> None:
    if _is_real_dir(p):
        shutil.rmtree(p)
    else:
        os.unlink(p)


def _tar_xattrs(member: tarfile.TarInfo) -> dict[str, bytes]:
    return {key[len("SCHILY.xattr."):]: value.encode("utf-8", "surrogateescape")
            for key, value in member.pax_headers.items() if key.startswith("SCHILY.xattr.")}


class _LayerDir:
    """Extracts one layer tar into `root`, given the already extracted layers below it."""

    def __init__(self, root: Path, lowers: list[Path]) -> None:
        self.root = root
        self.lowers = lowers  # base first
        self.whited: set[str] = set()
        self.dir_entries: dict[str, tarfile.TarInfo] = {}

    def real(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    @staticmethod
    def _cut_off(layer: Path, path: str) -> bool:
        """Does `layer` hide everything below it at `path` through an ancestor
        (a non-directory, a whiteout, or an opaque directory)?"""
        for ancestor in _ancestors(path):
            p = layer / ancestor.lstrip("/")
            if not os.path.lexists(p):
                return False
            if not _is_real_dir(p) or _is_opaque(p):
                return True
        return False

    def lower_dir_attrs(self, path: str) -> _DirAttrs | None:
        """The attributes of the directory the layers below show at `path`, if any."""
        for lower in reversed(self.lowers):
            p = lower / path.lstrip("/")
            if os.path.lexists(p):
                if not _is_real_dir(p):
                    return None
                st = os.lstat(p)
                return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, _image_xattrs(p)
            if self._cut_off(lower, path):
                return None
        return None

    def init_root(self) -> None:
        _set_dir_attrs(self.root, self.lower_dir_attrs("/") or _DEFAULT_DIR)

    def make_dir(self, path: str) -> None:
        """Ensure `path` is a directory of this layer, creating implicit parents."""
        if path == "/":
            return
        self.make_dir(_parent(path))
        p = self.real(path)
        if os.path.lexists(p):
            if _is_real_dir(p):
                return
            if not _is_whiteout(p):
                raise ValueError(f"{path!r} is used as a directory but is not one")
            # whited out in this layer, then used as a parent: a new, empty directory
            os.unlink(p)
            os.mkdir(p)
            _set_dir_attrs(p, _DEFAULT_DIR)
            os.setxattr(p, OPAQUE_XATTR, b"y")
            return
        os.mkdir(p)
        inherited = None if self._cut_off(self.root, path) else self.lower_dir_attrs(path)
        _set_dir_attrs(p, inherited or _DEFAULT_DIR)

    def make_opaque(self, path: str) -> None:
        self.make_dir(path)
        os.setxattr(self.real(path), OPAQUE_XATTR, b"y")

    def make_whiteout(self, path: str) -> None:
        self.make_dir(_parent(path))
        p = self.real(path)
        if os.path.lexists(p):
            _remove(p)
        os.mknod(p, stat.S_IFCHR | 0o600, os.makedev(0, 0))
        self.whited.add(path)

    def add(self, path: str, member: tarfile.TarInfo, data: bytes) -> None:
        if path == "/":
            if not member.isdir():
                raise ValueError("the root of a layer must be a directory")
            self.dir_entries[path] = member
            return
        self.make_dir(_parent(path))
        p = self.real(path)
        if member.isdir():
            if os.path.lexists(p) and not _is_real_dir(p):
                _remove(p)
            if not os.path.lexists(p):
                os.mkdir(p)
                if path in self.whited:
                    os.setxattr(p, OPAQUE_XATTR, b"y")
            self.dir_entries[path] = member  # attributes last: children change mtime
            return
        if os.path.lexists(p):
            _remove(p)
        if member.islnk():
            os.link(self.real(normalize(member.linkname)), p, follow_symlinks=False)
            return
        if member.isreg():
            p.write_bytes(data)
        elif member.issym():
            os.symlink(member.linkname, p)
        elif member.ischr() or member.isblk():
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            os.mknod(p, kind | 0o600, os.makedev(member.devmajor, member.devminor))
        elif member.isfifo():
            os.mkfifo(p)
        else:
            raise ValueError(f"unsupported tar member type {member.type!r} for {path!r}")
        os.chown(p, member.uid, member.gid, follow_symlinks=False)
        if not member.issym():
            os.chmod(p, member.mode & 0o7777)  # after chown, which clears setuid
        _set_xattrs(p, _tar_xattrs(member))  # after chown, which drops security.capability
        os.utime(p, (member.mtime, member.mtime), follow_symlinks=False)

    def finish(self) -> None:
        """Apply directory attributes, deepest first, now that no child will change them."""
        for path in sorted(self.dir_entries, key=lambda d: d.count("/"), reverse=True):
            member = self.dir_entries[path]
            p = self.real(path)
            _set_dir_attrs(p, (member.mode & 0o7777, member.uid, member.gid, _tar_xattrs(member)))
            os.utime(p, (member.mtime, member.mtime))


def _extract(layer_tar: bytes, root: Path, lowers: list[Path]) -> None:
    opaque_dirs, whiteouts, entries = [], [], []
    for member, data in read_members(layer_tar):
        path = normalize(member.name)
        parent, _, name = path.rpartition("/")
        if name == OPAQUE:
            opaque_dirs.append(parent or "/")
        elif name.startswith(WHITEOUT_PREFIX):
            whiteouts.append(f"{parent}/{name[len(WHITEOUT_PREFIX):]}")
        else:
            entries.append((path, member, data))
    layer = _LayerDir(root, lowers)
    layer.init_root()
    for path in opaque_dirs:
        layer.make_opaque(path)
    for path in whiteouts:
        layer.make_whiteout(path)
    for path, member, data in entries:
        layer.add(path, member, data)
    layer.finish()


def layers_to_overlay_dirs(layers: list[bytes], dest: Path) -> list[Path]:
    """Extract each layer into `dest/<index>`; returns the directories, base first."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    dirs: list[Path] = []
    for i, layer in enumerate(layers):
        d = dest / str(i)
        d.mkdir()
        _extract(decompress(layer), d, dirs)
        dirs.append(d)
    return dirs


def _with_floor(layer_dirs: list[Path]) -> list[Path]:
    """Overlayfs wants two or more lower directories without an upper: add an empty
    bottom one when there is a single layer (it cannot change the merged view)."""
    dirs = [Path(d) for d in layer_dirs]
    if len(dirs) == 1:
        empty = dirs[0].parent / ".empty-floor"
        empty.mkdir(exist_ok=True)
        dirs.insert(0, empty)
    return dirs


def mount_overlay(layer_dirs: list[Path], mountpoint: Path) -> None:
    """Read-only kernel overlayfs of `layer_dirs` (base first, as `layers_to_overlay_dirs`
    returns them; the lowerdir option lists them topmost first)."""
    dirs = _with_floor(layer_dirs)
    base = os.path.commonpath([d.parent for d in dirs])
    lowerdir = ":".join(os.path.relpath(d, base) for d in reversed(dirs))
    if len(lowerdir) > _MAX_MOUNT_OPTIONS:
        raise ValueError(f"{len(dirs)} layers do not fit in one mount option string")
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lowerdir}",
                    os.path.abspath(mountpoint)], cwd=base, check=True, capture_output=True)


# Read-write overlay options for the container differential tests. redirect_dir=on lets
# the kernel rename lower and merged directories (recording a redirect xattr) instead of
# answering EXDEV, which is what layerfs does too; index=on keeps a lower hard link
# pair linked when one name is copied up, and counts nlink across unlink of one name
# (ovl_nlink_start), which is what layerfs aims for. Both need upper and lowers on one
# filesystem that supports file handles (ext4, tmpfs, xfs).
RW_OPTIONS: tuple[str, ...] = ("redirect_dir=on", "index=on")


def mount_overlay_rw(lowers: list[Path], upper: Path, work: Path, mountpoint: Path,
                     options: tuple[str, ...] = RW_OPTIONS) -> None:
    """Read-write kernel overlayfs: `lowers` (base first, as `layers_to_overlay_dirs`
    returns them) under a writable `upper` with its `work` dir (both empty and on the
    same filesystem). The lower directories are never changed, so one extraction can
    serve many mounts, each with a fresh upper."""
    dirs = [Path(d) for d in lowers]
    base = os.path.commonpath([d.parent for d in dirs])
    lowerdir = ":".join(os.path.relpath(d, base) for d in reversed(dirs))
    option_string = ",".join([f"lowerdir={lowerdir}", f"upperdir={os.path.abspath(upper)}",
                              f"workdir={os.path.abspath(work)}", *options])
    if len(option_string) > _MAX_MOUNT_OPTIONS:
        raise ValueError(f"{len(dirs)} layers do not fit in one mount option string")
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", option_string,
                    os.path.abspath(mountpoint)], cwd=base, check=True, capture_output=True)


def mount_fuse_overlayfs(layer_dirs: list[Path], mountpoint: Path) -> None:
    """Read-only fuse-overlayfs of `layer_dirs` (base first), for comparison."""
    dirs = _with_floor(layer_dirs)
    lowerdir = ":".join(os.path.abspath(d) for d in reversed(dirs))
    subprocess.run(["fuse-overlayfs", "-o", f"lowerdir={lowerdir}", os.path.abspath(mountpoint)],
                   check=True, capture_output=True)


def umount(mountpoint: Path) -> None:
    subprocess.run(["umount", os.fspath(mountpoint)], check=True, capture_output=True)


def overlay_tree(layers: list[bytes], workdir: Path, program: str = "kernel") -> dict[str, Node]:
    """Snapshot of `layers` merged by kernel overlayfs ("kernel") or "fuse-overlayfs"."""
    workdir = Path(workdir)
    dirs = layers_to_overlay_dirs(layers, workdir / "layers")
    mountpoint = workdir / "merged"
    mountpoint.mkdir()
    (mount_overlay if program == "kernel" else mount_fuse_overlayfs)(dirs, mountpoint)
    try:
        return snapshot(mountpoint)
    finally:
        umount(mountpoint)
