"""Turn kernel-overlay-format directories into an OCI image layout, streaming.

The layers hold a 1 GiB file, so a layer tar is never built in memory: tarfile
writes straight into a file object that hashes what passes through, and the
blob is renamed to its digest when complete.

Overlay format -> OCI layer format:
  char device 0/0 (whiteout)          -> empty regular file `.wh.NAME`
  dir with trusted.overlay.opaque=y   -> the dir, then `DIR/.wh..wh..opq`
  trusted.overlay.* xattrs            -> dropped (overlay bookkeeping)
  other xattrs                        -> PAX `SCHILY.xattr.NAME` records
  files sharing an inode              -> first one a file, the rest hardlinks
Owners, modes (setuid, sticky...), mtimes, symlinks, devices and fifos are kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
COPY_CHUNK = 4 << 20


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor (what a manifest or index points at)."""

    media_type: str
    digest: str
    size: int

    def as_json(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


class HashingWriter:
    """A write-only file object that counts and sha256-hashes what it forwards."""

    def __init__(self, target: BinaryIO) -> None:
        self._target = target
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self._target.write(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._target.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


def _xattrs(path: str) -> dict[str, bytes]:
    """All xattrs of `path` (not following symlinks)."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {name: os.getxattr(path, name, follow_symlinks=False) for name in names}


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _base_info(arcname: str, st: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(arcname)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""
    info.mtime = int(st.st_mtime)
    return info


class LayerTarWriter:
    """Writes one overlay directory as one uncompressed OCI layer tar."""

    def __init__(self, source: Path, tar: tarfile.TarFile) -> None:
        self.source = source
        self.tar = tar
        self._links: dict[tuple[int, int], str] = {}  # (dev, ino) -> first name written

    @classmethod
    def write(cls, source: Path, out: HashingWriter) -> None:
        """Write the whole layer tar for `source` into `out`."""
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                          copybufsize=COPY_CHUNK) as tar:
            cls(source, tar).write_all()

    def write_all(self) -> None:
        """Walk the tree parents-first in a stable order and add every entry."""
        for dirpath, dirnames, filenames in os.walk(self.source):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, self.source)
            if rel_dir != ".":
                self._add_dir(dirpath, rel_dir)
            for name in sorted(filenames):
                self._add_entry(os.path.join(dirpath, name), os.path.normpath(os.path.join(rel_dir, name)))
            # symlinks to directories appear in dirnames but must not be descended
            for name in list(dirnames):
                full = os.path.join(dirpath, name)
                if os.path.islink(full):
                    dirnames.remove(name)
                    self._add_entry(full, os.path.normpath(os.path.join(rel_dir, name)))

    def _pax_xattrs(self, info: tarfile.TarInfo, xattrs: dict[str, bytes]) -> None:
        """Keep real xattrs (capabilities, ACLs...), drop overlay bookkeeping."""
        headers = dict(info.pax_headers)
        for name, value in xattrs.items():
            if name.startswith(("trusted.overlay.", "user.overlay.")):
                continue
            # tarfile restores the raw bytes of surrogate-escaped values (hdrcharset=BINARY)
            headers["SCHILY.xattr." + name] = value.decode("utf-8", "surrogateescape")
        info.pax_headers = headers

    def _add_dir(self, path: str, arcname: str) -> None:
        st = os.lstat(path)
        xattrs = _xattrs(path)
        info = _base_info(arcname + "/", st)
        info.type = tarfile.DIRTYPE
        self._pax_xattrs(info, xattrs)
        self.tar.addfile(info)
        if any(xattrs.get(name) == b"y" for name in OPAQUE_XATTRS):
            self._add_marker(os.path.join(arcname, ".wh..wh..opq"), st)

    def _add_marker(self, arcname: str, st: os.stat_result) -> None:
        """An empty regular file that only means something to the unpacker."""
        info = _base_info(arcname, st)
        info.mode = 0o644
        info.uid = info.gid = 0
        info.type = tarfile.REGTYPE
        self.tar.addfile(info)

    def _add_entry(self, path: str, arcname: str) -> None:
        st = os.lstat(path)
        if _is_whiteout(st):
            parent, name = os.path.split(arcname)
            self._add_marker(os.path.join(parent, ".wh." + name), st)
            return
        info = _base_info(arcname, st)
        self._pax_xattrs(info, _xattrs(path))
        mode = st.st_mode
        if stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in self._links:
                info.type = tarfile.LNKTYPE
                info.linkname = self._links[key]
                self.tar.addfile(info)
                return
            if st.st_nlink > 1:
                self._links[key] = arcname
            info.type = tarfile.REGTYPE
            info.size = st.st_size
            with open(path, "rb") as f:
                self.tar.addfile(info, f)
        elif stat.S_ISLNK(mode):
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink(path)
            self.tar.addfile(info)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            self.tar.addfile(info)
        elif stat.S_ISFIFO(mode):
            info.type = tarfile.FIFOTYPE
            self.tar.addfile(info)
        # sockets cannot be represented in a tar; skip them like every OCI tool does


class BlobWriter:
    """Writes one blob under a temporary name, then renames it to its digest."""

    def __init__(self, layout: Path) -> None:
        self.blobs = layout / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)

    def write_layer(self, source: Path) -> Descriptor:
        tmp = self.blobs / f".tmp-{os.getpid()}-{source.name}"
        with open(tmp, "wb") as f:
            out = HashingWriter(f)
            LayerTarWriter.write(source, out)
            out.flush()
            os.fsync(f.fileno())
        tmp.rename(self.blobs / out.digest.split(":", 1)[1])
        return Descriptor(LAYER_MEDIA_TYPE, out.digest, out.size)

    def write_json(self, media_type: str, document: dict[str, object]) -> Descriptor:
        data = json.dumps(document, indent=None, separators=(",", ":"), sort_keys=True).encode()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        (self.blobs / digest.split(":", 1)[1]).write_bytes(data)
        return Descriptor(media_type, digest, len(data))


def write_oci_layout(layout: Path, layer_dirs: list[Path], ref_name: str, created: str) -> Descriptor:
    """Write an OCI image layout at `layout` (must not exist yet) with one tagged image.

    `layer_dirs` are bottom first. Returns the manifest descriptor. The layout is
    built under a temporary name and renamed into place, so an interrupted run
    leaves nothing that looks complete.
    """
    tmp_layout = layout.with_name(layout.name + ".partial")
    if tmp_layout.exists():
        shutil.rmtree(tmp_layout)
    tmp_layout.mkdir(parents=True)
    blobs = BlobWriter(tmp_layout)
    layers = [blobs.write_layer(d) for d in layer_dirs]
    config: dict[str, object] = {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/bash"],
        },
        "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
        "history": [{"created": created, "created_by": f"layerfs bench layer {d.name}"} for d in layer_dirs],
    }
    config_desc = blobs.write_json(CONFIG_MEDIA_TYPE, config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": config_desc.as_json(),
        "layers": [layer.as_json() for layer in layers],
    }
    manifest_desc = blobs.write_json(MANIFEST_MEDIA_TYPE, manifest)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {**manifest_desc.as_json(), "annotations": {"org.opencontainers.image.ref.name": ref_name}}
        ],
    }
    (tmp_layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (tmp_layout / "index.json").write_text(json.dumps(index, indent=2))
    tmp_layout.rename(layout)
    return manifest_desc


def manifest_digest(layout: Path, ref_name: str) -> str:
    """The manifest digest tagged `ref_name` in an existing layout."""
    index = json.loads((layout / "index.json").read_text())
    for entry in index.get("manifests", []):
        if entry.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref_name:
            return str(entry["digest"])
    raise KeyError(ref_name)
