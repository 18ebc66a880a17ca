"""Build OCI layer tars, image layouts and archives for tests, from declarative specs.

Tests describe a layer as a list of `TarSpec` entries and get exact bytes back, so
every case is reproducible and can be fed both to layerfs and to the reference
implementations (`oracle`, kernel overlayfs). Nothing here touches layerfs.

Paths in specs are `str`; a name that is not valid UTF-8 is written as the
`os.fsdecode` form (surrogate escapes), e.g. `os.fsdecode(b"caf\\xe9")`.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import zstandard

DEFAULT_MTIME = 1700000000
CREATED = "2023-11-14T22:13:20Z"  # DEFAULT_MTIME as RFC 3339, so configs are reproducible
REF_NAME = "org.opencontainers.image.ref.name"

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = {
    "none": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}

_KIND_TO_TARTYPE = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "chardev": tarfile.CHRTYPE,
    "blockdev": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}


# ---------------------------------------------------------------------------
# Layer entries


@dataclass
class TarSpec:
    """One tar member, described by what it should be rather than by header fields."""

    path: str
    kind: str  # one of _KIND_TO_TARTYPE
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = DEFAULT_MTIME
    xattrs: dict[str, bytes] | None = None
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0

    def tarinfo(self) -> tarfile.TarInfo:
        """The header for this entry; tweak it and pass it to `raw_tar` for hostile tars."""
        info = tarfile.TarInfo(self.path)
        info.type = _KIND_TO_TARTYPE[self.kind]
        info.mode = self.mode
        info.uid, info.gid = self.uid, self.gid
        info.uname = info.gname = ""  # numeric ids only: the image must not depend on host names
        info.mtime = self.mtime
        info.size = len(self.data) if self.kind == "file" else 0
        info.linkname = self.linkname
        info.devmajor, info.devminor = self.devmajor, self.devminor
        if self.xattrs:
            # tarfile only takes str values; surrogateescape keeps arbitrary bytes exact
            # (tarfile then marks the header hdrcharset=BINARY, as GNU tar does).
            info.pax_headers = {f"SCHILY.xattr.{name}": value.decode("utf-8", "surrogateescape")
                                for name, value in self.xattrs.items()}
        return info


def file(path: str, data: bytes = b"", mode: int = 0o644, uid: int = 0, gid: int = 0,
         mtime: int = DEFAULT_MTIME, xattrs: dict[str, bytes] | None = None) -> TarSpec:
    return TarSpec(path, "file", data=data, mode=mode, uid=uid, gid=gid, mtime=mtime, xattrs=xattrs)


def directory(path: str, mode: int = 0o755, uid: int = 0, gid: int = 0,
              mtime: int = DEFAULT_MTIME, xattrs: dict[str, bytes] | None = None) -> TarSpec:
    return TarSpec(path, "dir", mode=mode, uid=uid, gid=gid, mtime=mtime, xattrs=xattrs)


def symlink(path: str, target: str, mode: int = 0o777, uid: int = 0, gid: int = 0,
            mtime: int = DEFAULT_MTIME) -> TarSpec:
    return TarSpec(path, "symlink", linkname=target, mode=mode, uid=uid, gid=gid, mtime=mtime)


def hardlink(path: str, target: str) -> TarSpec:
    """A second name for `target`, an earlier entry of the same layer (tar typeflag 1)."""
    return TarSpec(path, "hardlink", linkname=target)


def chardev(path: str, major: int, minor: int, mode: int = 0o666, uid: int = 0, gid: int = 0,
            mtime: int = DEFAULT_MTIME) -> TarSpec:
    return TarSpec(path, "chardev", mode=mode, uid=uid, gid=gid, mtime=mtime,
                   devmajor=major, devminor=minor)


def blockdev(path: str, major: int, minor: int, mode: int = 0o660, uid: int = 0, gid: int = 0,
             mtime: int = DEFAULT_MTIME) -> TarSpec:
    return TarSpec(path, "blockdev", mode=mode, uid=uid, gid=gid, mtime=mtime,
                   devmajor=major, devminor=minor)


def fifo(path: str, mode: int = 0o644, uid: int = 0, gid: int = 0,
         mtime: int = DEFAULT_MTIME) -> TarSpec:
    return TarSpec(path, "fifo", mode=mode, uid=uid, gid=gid, mtime=mtime)


def whiteout(path: str) -> TarSpec:
    """Delete `path` of lower layers: an empty file `dirname/.wh.basename`."""
    head, _, name = path.rstrip("/").rpartition("/")
    return file(f"{head}/.wh.{name}" if head else f".wh.{name}", mode=0o644)


def opaque(dirpath: str) -> TarSpec:
    """Hide every lower child of `dirpath`: the marker file `dirpath/.wh..wh..opq`."""
    dirpath = dirpath.rstrip("/")
    return file(f"{dirpath}/.wh..wh..opq" if dirpath else ".wh..wh..opq", mode=0o644)


# ---------------------------------------------------------------------------
# Tars and compression


def compress(data: bytes, compression: str) -> bytes:
    if compression == "none":
        return data
    if compression == "gzip":
        return gzip.compress(data, mtime=0)  # mtime 0: same input, same digest
    if compression == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    raise ValueError(f"unknown compression {compression!r}")


def compression_of(data: bytes) -> str:
    """Detect compression from the magic bytes, as layer consumers do."""
    if data[:2] == b"\x1f\x8b":
        return "gzip"
    if data[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return "none"


def decompress(data: bytes) -> bytes:
    kind = compression_of(data)
    if kind == "gzip":
        return gzip.decompress(data)
    if kind == "zstd":
        # stream reader: frames written by streaming encoders carry no content size
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    return data


def _open_writer(buf: io.BytesIO) -> tarfile.TarFile:
    return tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                        encoding="utf-8", errors="surrogateescape")


def make_layer(entries: list[TarSpec], compression: str = "none") -> bytes:
    """A layer tar (PAX) with `entries` in the given order and names exactly as given.

    A hard link's header repeats its target's owner, mode and mtime, as tar writers do
    (they stat the inode); some extractors, Python's tarfile among them, apply them."""
    buf = io.BytesIO()
    seen: dict[str, TarSpec] = {}
    with _open_writer(buf) as tar:
        for spec in entries:
            info = spec.tarinfo()
            target = seen.get(spec.linkname) if spec.kind == "hardlink" else None
            if target is not None:
                info.mode, info.uid, info.gid = target.mode, target.uid, target.gid
                info.mtime = target.mtime
            tar.addfile(info, io.BytesIO(spec.data) if spec.kind == "file" else None)
            seen[spec.path] = spec
    return compress(buf.getvalue(), compression)


def raw_tar(members: Iterable[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]],
            compression: str = "none", format: int = tarfile.PAX_FORMAT) -> bytes:
    """Escape hatch for hostile tars, at the header level.

    `make_layer` already keeps absolute names, "../", links to unseen paths and duplicates
    as given; use this for what specs cannot say (other formats, type flags, sizes).
    A (TarInfo, data) pair gets its size from data; a bare TarInfo is written as a header
    only, its size field untouched, so a non-zero size makes a truncated member."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=format, encoding="utf-8",
                      errors="surrogateescape") as tar:
        for member in members:
            info, data = member if isinstance(member, tuple) else (member, None)
            if data is not None:
                info = copy.copy(info)
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return compress(buf.getvalue(), compression)


# ---------------------------------------------------------------------------
# Images


@dataclass
class ImageInfo:
    """Digests of what was written, so tests can check what layerfs reports.

    `manifest_digest` is None for an old-style docker archive, which has no manifest
    blob (the importer makes its own)."""

    manifest_digest: str | None
    config_digest: str
    diff_ids: list[str]
    layer_digests: list[str]


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json_bytes(obj: object) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=True).encode()


def image_config(diff_ids: list[str], config: dict | None = None) -> dict:
    """An OCI image config for these layers: amd64/linux, one history entry per layer."""
    return {
        "created": CREATED,
        "architecture": "amd64",
        "os": "linux",
        "config": dict(config or {}),
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [{"created": CREATED, "created_by": f"layerfs-tests layer {i}"}
                    for i in range(len(diff_ids))],
    }


def _put_blob(blobs: Path, data: bytes) -> str:
    digest = sha256_digest(data)
    path = blobs / digest.split(":", 1)[1]
    if not path.exists():
        path.write_bytes(data)
    return digest


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def write_oci_layout(dest: Path, layers: list[bytes], tag: str | None = "latest",
                     config: dict | None = None, media_types: list[str] | None = None) -> ImageInfo:
    """Create, or add one image to, an OCI image layout at `dest`.

    `tag` is stored verbatim as the ref.name annotation ("v1", "name:tag") and replaces
    an index entry with the same ref.name, as `skopeo copy` does. `media_types`
    overrides the per-layer media type otherwise inferred from the compression."""
    if media_types is not None and len(media_types) != len(layers):
        raise ValueError("media_types must have one entry per layer")
    dest = Path(dest)
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (dest / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}\n')

    diff_ids, layer_descs = [], []
    for i, data in enumerate(layers):
        media_type = media_types[i] if media_types else MT_LAYER[compression_of(data)]
        layer_descs.append({"mediaType": media_type, "digest": _put_blob(blobs, data),
                            "size": len(data)})
        diff_ids.append(sha256_digest(decompress(data)))
    config_bytes = _json_bytes(image_config(diff_ids, config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": _put_blob(blobs, config_bytes),
                   "size": len(config_bytes)},
        "layers": layer_descs,
    }
    manifest_bytes = _json_bytes(manifest)
    manifest_desc: dict = {"mediaType": MT_MANIFEST, "digest": _put_blob(blobs, manifest_bytes),
                           "size": len(manifest_bytes)}
    if tag is not None:
        manifest_desc["annotations"] = {REF_NAME: tag}

    index_path = dest / "index.json"
    if index_path.exists():
        index = json.loads(index_path.read_text())
    else:
        index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": []}
    index["manifests"] = [d for d in index["manifests"]
                          if tag is None or (d.get("annotations") or {}).get(REF_NAME) != tag]
    index["manifests"].append(manifest_desc)
    _write_atomic(index_path, _json_bytes(index))
    return ImageInfo(manifest_desc["digest"], manifest["config"]["digest"], diff_ids,
                     [d["digest"] for d in layer_descs])


def read_oci_layers(layout: Path, ref: str = "latest") -> list[bytes]:
    """The layer blobs, base first, of the manifest tagged `ref` in an OCI layout
    (whatever tool wrote it), so the oracle can be run on exactly those bytes."""
    layout = Path(layout)
    index = json.loads((layout / "index.json").read_text())
    for desc in index["manifests"]:
        if (desc.get("annotations") or {}).get(REF_NAME) == ref:
            manifest = json.loads(_blob(layout, desc["digest"]))
            return [_blob(layout, layer["digest"]) for layer in manifest["layers"]]
    raise KeyError(f"no manifest tagged {ref!r} in {layout}")


def read_oci_manifest(layout: Path, ref: str = "latest") -> dict:
    """The manifest tagged `ref` in an OCI layout."""
    index = json.loads((Path(layout) / "index.json").read_text())
    for desc in index["manifests"]:
        if (desc.get("annotations") or {}).get(REF_NAME) == ref:
            return json.loads(_blob(Path(layout), desc["digest"]))
    raise KeyError(f"no manifest tagged {ref!r} in {layout}")


def _blob(layout: Path, digest: str) -> bytes:
    algorithm, hexdigest = digest.split(":", 1)
    return (layout / "blobs" / algorithm / hexdigest).read_bytes()


def _archive(files: dict[str, bytes]) -> bytes:
    """A plain tar of `files` (path -> content) with their parent directories first."""
    dirs = sorted({str(p) for name in files for p in Path(name).parents if str(p) != "."})
    buf = io.BytesIO()
    with _open_writer(buf) as tar:
        for d in dirs:
            tar.addfile(directory(d).tarinfo())
        for name in sorted(files):
            tar.addfile(file(name, files[name]).tarinfo(), io.BytesIO(files[name]))
    return buf.getvalue()


def _tree_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def write_oci_archive(dest_file: Path, layers: list[bytes], tag: str | None = "latest",
                      **kw) -> ImageInfo:
    """An `oci-archive:` file: a tar of an OCI layout (as `skopeo copy oci-archive:` makes)."""
    with tempfile.TemporaryDirectory() as tmp:
        info = write_oci_layout(Path(tmp), layers, tag=tag, **kw)
        Path(dest_file).write_bytes(_archive(_tree_files(Path(tmp))))
    return info


def _split_repo_tag(repo_tag: str) -> tuple[str, str]:
    """'host:5000/a/b:tag' -> ('host:5000/a/b', 'tag'); the tag defaults to latest."""
    head, sep, tail = repo_tag.rpartition(":")
    if not sep or "/" in tail:
        return repo_tag, "latest"
    return head, tail


def write_docker_archive(dest_file: Path, layers: list[bytes], repo_tag: str | None = "test:latest",
                         new_layout: bool = False, config: dict | None = None) -> ImageInfo:
    """A `docker save` archive. Layers are stored uncompressed, as docker does.

    Old layout: manifest.json [{Config: "<hex>.json", RepoTags, Layers: ["<id>/layer.tar"]}]
    with per-layer VERSION/json/layer.tar directories and a `repositories` file.
    new_layout (Docker 25+): the archive is also an OCI layout, and manifest.json points
    at "blobs/sha256/<hex>" paths."""
    tars = [decompress(layer) for layer in layers]
    diff_ids = [sha256_digest(t) for t in tars]
    config_bytes = _json_bytes(image_config(diff_ids, config))
    config_digest = sha256_digest(config_bytes)
    config_hex = config_digest.split(":", 1)[1]
    repo, tag = _split_repo_tag(repo_tag) if repo_tag else (None, None)
    files: dict[str, bytes] = {}

    if new_layout:
        with tempfile.TemporaryDirectory() as tmp:
            info = write_oci_layout(Path(tmp), tars, tag=None, config=config)
            files.update(_tree_files(Path(tmp)))
        index = json.loads(files["index.json"])
        if repo_tag:
            full_name = repo if "/" in repo else f"docker.io/library/{repo}"
            index["manifests"][0]["annotations"] = {
                "io.containerd.image.name": f"{full_name}:{tag}", REF_NAME: tag}
        files["index.json"] = _json_bytes(index)
        layer_paths = ["blobs/sha256/" + d.split(":", 1)[1] for d in info.layer_digests]
        config_path = "blobs/sha256/" + config_hex
        top_id = config_hex
    else:
        parent = ""
        layer_paths = []
        for t, diff_id in zip(tars, diff_ids):
            layer_id = hashlib.sha256(f"{parent}\n{diff_id}".encode()).hexdigest()
            v1 = {"id": layer_id, "created": CREATED, "os": "linux"}
            if parent:
                v1["parent"] = parent
            files[f"{layer_id}/VERSION"] = b"1.0"
            files[f"{layer_id}/json"] = _json_bytes(v1)
            files[f"{layer_id}/layer.tar"] = t
            layer_paths.append(f"{layer_id}/layer.tar")
            parent = layer_id
        config_path = f"{config_hex}.json"
        files[config_path] = config_bytes
        top_id = parent
        info = ImageInfo(None, config_digest, diff_ids, list(diff_ids))

    files["manifest.json"] = _json_bytes([{
        "Config": config_path,
        "RepoTags": [repo_tag] if repo_tag else None,
        "Layers": layer_paths,
    }])
    if repo_tag:
        files["repositories"] = _json_bytes({repo: {tag: top_id}})
    Path(dest_file).write_bytes(_archive(files))
    return info


# ---------------------------------------------------------------------------
# A realistic small image: busybox


BUSYBOX = Path("/bin/busybox")
# Like the official busybox image, some applets are hard links to the binary, most are symlinks.
_HARDLINK_APPLETS = ["ls", "cat", "cp"]
_SYMLINK_APPLETS = [
    "[", "ash", "basename", "chmod", "chown", "cut", "date", "dirname", "du", "echo", "env",
    "false", "find", "grep", "gzip", "head", "hostname", "id", "kill", "ln", "mkdir", "mount",
    "mv", "printf", "ps", "pwd", "readlink", "rm", "sed", "sh", "sleep", "sort", "stat", "tail",
    "tar", "tee", "test", "touch", "tr", "true", "uname", "uniq", "vi", "wc", "whoami", "xargs",
]
PASSWD = (b"root:x:0:0:root:/root:/bin/sh\n"
          b"daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
          b"user:x:1000:1000:Test User:/home/user:/bin/sh\n"
          b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
GROUP = (b"root:x:0:\ndaemon:x:1:\nshadow:x:42:\nuser:x:1000:\nnogroup:x:65534:\n")
SECRET = b"only root may read this\n"


def _busybox_base() -> list[TarSpec]:
    """The base layer: what a minimal distro image holds, with the awkward bits on purpose
    (setuid/setgid files, a 0600 root file, a 0700 /root, sticky /tmp, hard links, an xattr)."""
    specs = [
        directory("bin"), directory("dev"), directory("etc"), directory("home"),
        directory("home/user", uid=1000, gid=1000), directory("proc", mode=0o555),
        directory("root", mode=0o700), directory("sys", mode=0o555),
        directory("tmp", mode=0o1777), directory("usr"), directory("usr/bin"),
        directory("usr/sbin"), directory("var"), directory("var/log"),
        directory("var/spool/mail", mode=0o2775, gid=8),
        file("bin/busybox", BUSYBOX.read_bytes(), mode=0o755),
    ]
    specs += [hardlink(f"bin/{name}", "bin/busybox") for name in _HARDLINK_APPLETS]
    specs += [symlink(f"bin/{name}", "busybox") for name in _SYMLINK_APPLETS]
    specs += [
        symlink("usr/bin/env", "/bin/busybox"),
        file("etc/passwd", PASSWD),
        file("etc/group", GROUP),
        file("etc/shadow", b"root:*:19000:0:99999:7:::\n", mode=0o640, gid=42),
        file("etc/secret", SECRET, mode=0o600),
        file("etc/hostname", b"layerfs\n"),
        file("etc/os-release", b'NAME="layerfs test image"\nID=layerfs\n',
             xattrs={"user.layerfs.origin": b"busybox_image_layers"}),
        file("usr/bin/suid-hello", b"#!/bin/sh\necho hello from setuid\n", mode=0o4755),
        file("usr/bin/sgid-hello", b"#!/bin/sh\necho hello from setgid\n", mode=0o2755, gid=42),
        file("home/user/.profile", b"PS1='$ '\n", uid=1000, gid=1000),
        file("root/.profile", b"PS1='# '\n", mode=0o600),
    ]
    return specs


def busybox_image_layers(compressions: tuple[str, str, str] = ("gzip", "none", "zstd")
                         ) -> list[bytes]:
    """Three layers: the busybox base, then an application layer that edits and deletes,
    then a clean-up layer; the usual shape of a real image. Pass other `compressions`
    for tools without zstd (umoci 0.4)."""
    app = [
        directory("etc"),
        file("etc/passwd", PASSWD + b"app:x:1001:1001::/opt/app:/bin/sh\n"),
        whiteout("bin/false"),
        directory("home/user", uid=1000, gid=1000),
        opaque("home/user"),
        file("home/user/notes.txt", b"fresh home\n", uid=1000, gid=1000),
        directory("opt"),
        directory("opt/app", uid=1001, gid=1001),
        file("opt/app/run.sh", b"#!/bin/sh\nexec echo app\n", mode=0o755, uid=1001, gid=1001),
        directory("opt/app/data", mode=0o750, uid=1001, gid=1001),
        file("opt/app/data/table.bin", bytes(range(256)) * 64, mode=0o640, uid=1001, gid=1001),
        file("var/log/app.log", b"started\n"),
    ]
    cleanup = [
        directory("tmp", mode=0o1777),
        file("etc/motd", b"welcome\n"),
        whiteout("var/log/app.log"),
        whiteout("usr/bin/sgid-hello"),
        symlink("opt/app/run.sh", "/bin/true"),
        directory("opt/app/data", mode=0o700, uid=1001, gid=1001),
    ]
    return [make_layer(specs, compression)
            for specs, compression in zip([_busybox_base(), app, cleanup], compressions)]


def busybox_rootfs(dest: Path) -> Path:
    """The busybox base layer extracted to `dest` (a `dir:` import source or a umoci
    bundle rootfs). Owners are kept when run as root; xattrs are not extracted."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    kwargs = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
    with tarfile.open(fileobj=io.BytesIO(make_layer(_busybox_base())), encoding="utf-8",
                      errors="surrogateescape") as tar:
        tar.extractall(dest, numeric_owner=True, **kwargs)
    os.chmod(dest, 0o755)  # the layer has no "./" entry, so extractall leaves the root alone
    return dest
