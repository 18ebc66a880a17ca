"""The synthetic images of the `inspect` group, written straight as OCI layer tars.

inspect-a:latest is 20 layers and about 100,000 file entries, shaped like the
images `history`, `analyze` and `diff` are run on:
  files of varied sizes (mostly under 2 KiB, some tens of KiB, a few MiB);
  later layers that change earlier files' content (apt-get upgrade, app v2);
  a layer that re-adds files byte for byte (a second COPY of the same tree);
  a `RUN chown -R 1000:1000 /srv/app` layer (every file again, only the owner
  differs) and a `chmod -R` one (only the mode differs);
  whiteouts of files, of symlinks and of whole directories, opaque directories;
  hardlinks and symlinks (to files and to directories), files replaced by links.
inspect-b:latest shares the first SHARED_LAYERS layers (the very same blobs)
and then goes its own way, for `diff A B`.

Nothing is random at run time: every choice comes from seeded generators and
every timestamp is fixed, so the digests are the same on every machine (same
Python); file contents are slices of one seeded pool headed by the path and a
version, so a re-add is byte-identical and a change is not.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from .ocilayout import (
    CONFIG_MEDIA_TYPE,
    LAYER_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
    BlobWriter,
    Descriptor,
    HashingWriter,
)

FIXTURE_VERSION = 1  # bump when the generator changes: the cached layout is rebuilt
IMAGE_A = "inspect-a:latest"
IMAGE_B = "inspect-b:latest"
LAYERS = 20
SHARED_LAYERS = 15
EPOCH = 1767225600  # 2026-01-01T00:00:00Z; layer i is stamped EPOCH + i hours
POOL_SIZE = 16 << 20
APP_UID = 1000


@dataclass(frozen=True)
class Spec:
    """What a path is in the merged tree after some layer."""

    kind: str  # "file", "symlink", "hardlink", "dir"
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    size: int = 0
    version: int = 0  # a file's content is (path, version, size): same triple, same bytes
    target: str = ""  # symlink target or hardlink source
    stamp: int = -1  # index of the layer whose mtime it has (-1: the layer adding it)


@dataclass
class Layer:
    """One layer being generated: entries by path, whiteouts, opaque dirs."""

    created_by: str
    entries: dict[str, Spec] = field(default_factory=dict)
    whiteouts: set[str] = field(default_factory=set)
    opaque: set[str] = field(default_factory=set)


class Tree:
    """The merged tree as layers are applied (what the next layer sees)."""

    def __init__(self) -> None:
        self.paths: dict[str, Spec] = {}

    def copy(self) -> Tree:
        other = Tree()
        other.paths = dict(self.paths)
        return other

    def files(self, prefix: str) -> list[str]:
        """Regular files (not hardlinks) under `prefix`, in sorted order."""
        return sorted(p for p, s in self.paths.items() if s.kind == "file" and p.startswith(prefix))

    def remove_under(self, path: str) -> None:
        spec = self.paths.pop(path, None)
        if spec is not None and spec.kind != "dir":
            return  # a file, link: nothing below it (the common whiteout, kept O(1))
        for p in [p for p in self.paths if p.startswith(path + "/")]:
            del self.paths[p]

    def apply(self, layer: Layer, index: int) -> None:
        for path in layer.whiteouts:
            self.remove_under(path)
        for path in layer.opaque:
            for p in [p for p in self.paths if p.startswith(path + "/")]:
                del self.paths[p]
        for path, spec in list(layer.entries.items()):
            if spec.stamp < 0:
                spec = layer.entries[path] = replace(spec, stamp=index)
            old = self.paths.get(path)
            if old is not None and old.kind == "dir" and spec.kind != "dir":
                self.remove_under(path)
            self.paths[path] = spec


# ---------------------------------------------------------------- generating layers


def _size(rng: random.Random) -> int:
    """Mostly small: 90% under 2 KiB, 9.5% up to 16 KiB, 0.5% up to 256 KiB."""
    roll = rng.random()
    if roll < 0.90:
        return rng.randrange(16, 2048)
    if roll < 0.995:
        return rng.randrange(2048, 16 << 10)
    return rng.randrange(16 << 10, 256 << 10)


def _add_files(layer: Layer, rng: random.Random, root: str, dirs: int, per_dir: int, *,
               uid: int = 0, ext: str = "") -> list[str]:
    """`dirs` x `per_dir` new files under `root` (two directory levels), executable now and then."""
    added = []
    for d in range(dirs):
        base = f"{root}/d{d // 20:02d}/m{d:03d}"
        for f in range(per_dir):
            path = f"{base}/f{f:04d}{ext}"
            mode = 0o755 if rng.random() < 0.05 else 0o644
            layer.entries[path] = Spec("file", mode, uid, uid, _size(rng))
            added.append(path)
    return added


def _add_big(layer: Layer, rng: random.Random, root: str, count: int) -> None:
    for i in range(count):
        layer.entries[f"{root}/blob{i:02d}.bin"] = Spec("file", 0o644, 0, 0, rng.randrange(1 << 20, 6 << 20))


def _modify(layer: Layer, tree: Tree, rng: random.Random, prefix: str, count: int, *,
            resize: bool = True) -> None:
    """Change the content of `count` existing files (a new version, maybe a new size)."""
    candidates = tree.files(prefix)
    for path in sorted(rng.sample(candidates, min(count, len(candidates)))):
        old = tree.paths[path]
        size = _size(rng) if resize and rng.random() < 0.5 else old.size
        layer.entries[path] = Spec("file", old.mode, old.uid, old.gid, size, old.version + 1)


def _readd(layer: Layer, tree: Tree, paths: list[str]) -> None:
    """The same files again, byte for byte and with the same metadata."""
    for path in paths:
        layer.entries[path] = tree.paths[path]


def _dirs_under(tree: Tree, prefix: str) -> set[str]:
    found = set()
    for path in tree.paths:
        if path.startswith(prefix + "/"):
            parent = os.path.dirname(path)
            while parent and parent != os.path.dirname(prefix) and parent not in found:
                found.add(parent)
                parent = os.path.dirname(parent)
    return found


def _chown(layer: Layer, tree: Tree, prefix: str, uid: int) -> None:
    """`RUN chown -R uid:uid prefix`: every entry below again, only the owner changed."""
    for path, spec in tree.paths.items():
        if path == prefix or path.startswith(prefix + "/"):
            if spec.kind in ("file", "dir"):
                layer.entries[path] = replace(spec, uid=uid, gid=uid)  # chown keeps the mtime
            elif spec.kind == "symlink":
                layer.entries[path] = spec  # chown -R changes the link itself; keep it simple
    for path in _dirs_under(tree, prefix) | {prefix}:
        old = tree.paths.get(path, Spec("dir", 0o755))
        layer.entries[path] = Spec("dir", old.mode, uid, uid)


def _chmod(layer: Layer, tree: Tree, prefix: str, mode: int) -> None:
    for path in tree.files(prefix):
        spec = tree.paths[path]
        layer.entries[path] = replace(spec, mode=mode)


def _whiteout_files(layer: Layer, tree: Tree, rng: random.Random, prefix: str, count: int) -> None:
    candidates = tree.files(prefix)
    layer.whiteouts.update(rng.sample(candidates, min(count, len(candidates))))


def _symlinks(layer: Layer, tree: Tree, rng: random.Random, prefix: str, count: int, linkdir: str) -> None:
    """Symlinks (relative and absolute) in `linkdir` to files under `prefix`."""
    for i, target in enumerate(sorted(rng.sample(tree.files(prefix) or list(layer.entries), count))):
        link = f"{linkdir}/link{i:04d}"
        shown = "/" + target if i % 2 else os.path.relpath(target, linkdir)
        layer.entries[link] = Spec("symlink", 0o777, target=shown)


def _hardlinks(layer: Layer, sources: list[str], linkdir: str) -> None:
    """Hardlinks to files of this same layer (a tar can only link inside itself)."""
    for i, source in enumerate(sources):
        spec = layer.entries[source]
        layer.entries[f"{linkdir}/hl{i:04d}"] = Spec("hardlink", spec.mode, spec.uid, spec.gid, target=source)


def _base(tree: Tree, rng: random.Random) -> Layer:
    layer = Layer("ADD rootfs.tar.xz / # debian-like base: libraries, binaries, /etc, a cache")
    lib = _add_files(layer, rng, "usr/lib", 200, 150, ext=".so")
    _add_files(layer, rng, "usr/share/locale", 40, 50, ext=".mo")
    binaries = _add_files(layer, rng, "usr/bin", 2, 250)
    _add_files(layer, rng, "etc", 3, 100, ext=".conf")
    _add_files(layer, rng, "var/cache/app", 10, 200)
    _add_files(layer, rng, "var/lib/dpkg/info", 1, 1000, ext=".list")
    layer.entries["var/lib/dpkg/status"] = Spec("file", 0o644, size=200_000)
    layer.entries["etc/passwd"] = Spec("file", 0o644, size=900)
    layer.entries["etc/shadow"] = Spec("file", 0o640, 0, 42, size=500)
    layer.entries["tmp"] = Spec("dir", 0o1777)
    layer.entries["usr/bin/sudo"] = Spec("file", 0o4755, size=180_000)
    for top in ("bin", "lib", "sbin"):
        layer.entries[top] = Spec("symlink", 0o777, target=f"usr/{top}")
    for i, path in enumerate(lib[::150]):  # libfoo.so.1 -> libfoo.so for every directory
        layer.entries[path + ".1"] = Spec("symlink", 0o777, target=os.path.basename(path))
        if i % 2:
            layer.entries[path + ".1.2"] = Spec("symlink", 0o777, target=os.path.basename(path) + ".1")
    _hardlinks(layer, binaries[:100], "usr/bin/aliases")
    return layer


def _layers_a(tree: Tree) -> Iterator[Layer]:
    """The 20 layers of image A, each generated against the tree below it."""
    rng = random.Random(1)
    yield _base(tree, rng)

    layer = Layer("RUN apt-get install -y build-essential")
    _add_files(layer, rng, "usr/include", 40, 100, ext=".h")
    _add_files(layer, rng, "usr/lib/gcc", 20, 200)
    _modify(layer, tree, rng, "var/lib/dpkg/status", 1)
    yield layer

    layer = Layer("RUN pip install -r requirements.txt")
    _add_files(layer, rng, "usr/local/lib/python3.11/site-packages", 100, 100, ext=".py")
    yield layer

    layer = Layer("COPY app /srv/app")
    _add_files(layer, rng, "srv/app/src", 35, 100, ext=".js")
    _add_files(layer, rng, "srv/app/bin", 1, 500)
    yield layer

    layer = Layer("RUN make -C /srv/app build")
    _add_files(layer, rng, "srv/app/build", 10, 100, ext=".o")
    _add_big(layer, rng, "srv/app/build/artifacts", 10)
    yield layer

    layer = Layer("RUN apt-get upgrade -y")
    _modify(layer, tree, rng, "usr/lib/", 3000)
    _modify(layer, tree, rng, "var/lib/dpkg/status", 1)
    yield layer

    layer = Layer("RUN npm ci")
    _add_files(layer, rng, "srv/app/node_modules", 120, 100, ext=".js")
    yield layer

    layer = Layer("RUN rm -rf /usr/include && pip uninstall -y oldpkg")
    layer.whiteouts.add("usr/include")
    _whiteout_files(layer, tree, rng, "usr/local/lib/python3.11/site-packages/", 400)
    layer.whiteouts.update(p for p, s in tree.paths.items() if s.kind == "symlink" and p.endswith(".so.1.2"))
    yield layer

    layer = Layer("COPY app /srv/app # the same sources again, and config")
    _readd(layer, tree, tree.files("srv/app/src/")[:1500])
    _add_files(layer, rng, "etc/app", 2, 100, ext=".yaml")
    yield layer

    layer = Layer("RUN chown -R 1000:1000 /srv/app")
    _chown(layer, tree, "srv/app/src", APP_UID)
    _chown(layer, tree, "srv/app/bin", APP_UID)
    _chown(layer, tree, "srv/app/build", APP_UID)
    yield layer

    layer = Layer("RUN chmod -R 0555 /srv/app/bin")
    _chmod(layer, tree, "srv/app/bin/", 0o555)
    yield layer

    layer = Layer("RUN rm -rf /var/cache/app && mkdir -p /var/cache/app && app warm-cache")
    layer.opaque.add("var/cache/app")
    layer.entries["var/cache/app"] = Spec("dir", 0o755)
    _add_files(layer, rng, "var/cache/app", 1, 50)
    yield layer

    layer = Layer("RUN apt-get install -y runtime-libs")
    _add_files(layer, rng, "usr/lib/runtime", 70, 100, ext=".so")
    _modify(layer, tree, rng, "var/lib/dpkg/status", 1)
    yield layer

    layer = Layer("RUN update-alternatives --install ... && ln /opt/tools/d00/m000/* /opt/tools/links/")
    _symlinks(layer, tree, rng, "usr/lib/runtime/", 500, "etc/alternatives")
    new = _add_files(layer, rng, "opt/tools", 1, 200)
    _hardlinks(layer, new, "opt/tools/links")
    for i, path in enumerate(tree.files("usr/lib/gcc/")[:50]):  # a file becomes a symlink
        layer.entries[path] = Spec("symlink", 0o777, target=f"/opt/tools/d00/m000/f{i:04d}")
    yield layer

    layer = Layer("COPY data /data")
    _add_files(layer, rng, "data/small", 30, 100, ext=".json")
    _add_big(layer, rng, "data/models", 5)
    yield layer
    # ---- image B branches off here (SHARED_LAYERS = 15)

    layer = Layer("RUN pip install --upgrade -r requirements.txt")
    _modify(layer, tree, rng, "usr/local/lib/python3.11/site-packages/", 2000)
    _add_files(layer, rng, "usr/local/lib/python3.11/site-packages/newpkg", 30, 100, ext=".py")
    yield layer

    layer = Layer("RUN useradd -u 1000 app && npm prune --production")
    for name in ("etc/passwd", "etc/shadow"):
        _modify(layer, tree, rng, name, 1, resize=False)
    _whiteout_files(layer, tree, rng, "srv/app/node_modules/", 300)
    yield layer

    layer = Layer("COPY --chown=1000:1000 app /srv/app # v2")
    _modify(layer, tree, rng, "srv/app/src/", 2000)
    _add_files(layer, rng, "srv/app/src/v2", 20, 100, ext=".js", uid=APP_UID)
    yield layer

    layer = Layer("RUN rm -rf /srv/app/node_modules/d05 && rm -rf /data/small/* && echo '{}' > /data/small/x.json")
    layer.whiteouts.add("srv/app/node_modules/d05")
    layer.opaque.add("data/small")
    layer.entries["data/small"] = Spec("dir", 0o755)
    layer.entries["data/small/x.json"] = Spec("file", 0o644, size=3)
    yield layer

    layer = Layer("RUN apt-get install -y tini && rm -rf /var/lib/apt/lists/*")
    _add_files(layer, rng, "usr/share/tini", 5, 100)
    _modify(layer, tree, rng, "var/lib/dpkg/status", 1)
    yield layer


def _layers_b(tree: Tree) -> Iterator[Layer]:
    """Image B's own 5 layers on top of the shared 15."""
    rng = random.Random(2)
    layer = Layer("RUN pip install -r requirements-ml.txt")
    _add_files(layer, rng, "usr/local/lib/python3.11/site-packages/mlpkg", 40, 100, ext=".py")
    _add_big(layer, rng, "usr/local/lib/python3.11/site-packages/mlpkg/weights", 4)
    yield layer

    layer = Layer("RUN apt-get purge -y runtime-libs")
    layer.whiteouts.update(f"usr/lib/runtime/d{d:02d}" for d in range(3))
    _whiteout_files(layer, tree, rng, "usr/lib/runtime/d03/", 200)
    _modify(layer, tree, rng, "var/lib/dpkg/status", 1)
    yield layer

    layer = Layer("RUN apt-get upgrade -y")
    _modify(layer, tree, rng, "usr/lib/", 1500)
    yield layer

    layer = Layer("RUN chown -R 1000:1000 /data")
    _chown(layer, tree, "data", APP_UID)
    yield layer

    layer = Layer("COPY app /srv/app # v3")
    _modify(layer, tree, rng, "srv/app/src/", 1000)
    yield layer


def generate() -> tuple[list[Layer], list[Layer]]:
    """(A's 20 layers, B's 5 own layers); B = A's first SHARED_LAYERS + these."""
    tree = Tree()
    layers_a: list[Layer] = []
    branch: Tree | None = None
    for layer in _layers_a(tree):
        tree.apply(layer, len(layers_a))
        layers_a.append(layer)
        if len(layers_a) == SHARED_LAYERS:
            branch = tree.copy()
    assert len(layers_a) == LAYERS and branch is not None
    layers_b = []
    for i, layer in enumerate(_layers_b(branch), start=SHARED_LAYERS):
        branch.apply(layer, i)
        layers_b.append(layer)
    return layers_a, layers_b


# ---------------------------------------------------------------- writing tars


class Content:
    """File bytes from (path, version, size): a header, then a slice of one seeded pool."""

    def __init__(self) -> None:
        self.pool = random.Random(0).randbytes(POOL_SIZE)

    def data(self, path: str, version: int, size: int) -> bytes:
        head = f"{path} v{version}\n".encode()
        if size <= len(head):
            return head[:size]
        need = size - len(head)
        start = random.Random(f"{path}\0{version}").randrange(POOL_SIZE - need) if need < POOL_SIZE else 0
        return head + self.pool[start:start + need]


def _info(path: str, spec: Spec, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path)
    info.mode, info.uid, info.gid, info.mtime = spec.mode, spec.uid, spec.gid, mtime
    info.uname = info.gname = ""
    return info


def write_layer_tar(layer: Layer, below: Tree, index: int, content: Content, out: HashingWriter) -> dict[str, int]:
    """One layer as an uncompressed tar: parents first, sorted, hardlinks after
    their sources. Returns entry counts by kind."""
    mtime = EPOCH + index * 3600
    counts = {"file": 0, "dir": 0, "symlink": 0, "hardlink": 0, "whiteout": 0, "opaque": 0}
    written: set[str] = set()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]

        def ensure_dir(path: str) -> None:
            if not path or path in written:
                return
            ensure_dir(os.path.dirname(path))
            spec = layer.entries.get(path) or below.paths.get(path)
            if spec is None or spec.kind != "dir":
                spec = Spec("dir", 0o755)
            info = _info(path + "/", spec, mtime)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
            written.add(path)
            counts["dir"] += 1
            if path in layer.opaque:
                marker(f"{path}/.wh..wh..opq", "opaque")

        def marker(path: str, kind: str) -> None:
            info = _info(path, Spec("file"), mtime)
            tar.addfile(info)
            counts[kind] += 1

        for path in sorted(layer.whiteouts):
            ensure_dir(os.path.dirname(path))
            marker(os.path.join(os.path.dirname(path), ".wh." + os.path.basename(path)), "whiteout")
        for path in sorted(layer.opaque):
            ensure_dir(path)
        links = []
        for path in sorted(layer.entries):
            spec = layer.entries[path]
            if spec.kind == "dir":
                ensure_dir(path)
                continue
            if spec.kind == "hardlink":
                links.append(path)
                continue
            ensure_dir(os.path.dirname(path))
            info = _info(path, spec, EPOCH + spec.stamp * 3600 if spec.stamp >= 0 else mtime)
            if spec.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, spec.target
                tar.addfile(info)
            else:
                data = content.data(path, spec.version, spec.size)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            counts[spec.kind] += 1
        for path in links:
            spec = layer.entries[path]
            ensure_dir(os.path.dirname(path))
            info = _info(path, spec, mtime)
            info.type, info.linkname = tarfile.LNKTYPE, spec.target
            tar.addfile(info)
            counts["hardlink"] += 1
    return counts


def _blob(blobs: BlobWriter, layer: Layer, below: Tree, index: int, content: Content) -> tuple[Descriptor, dict]:
    tmp = blobs.blobs / f".tmp-{os.getpid()}-{index}"
    with open(tmp, "wb") as f:
        out = HashingWriter(f)
        counts = write_layer_tar(layer, below, index, content, out)
        out.flush()
    tmp.rename(blobs.blobs / out.digest.split(":", 1)[1])
    return Descriptor(LAYER_MEDIA_TYPE, out.digest, out.size), counts


def _config(layers: list[Descriptor], history: list[str]) -> dict[str, object]:
    created = [f"2026-01-01T{i:02d}:00:00Z" for i in range(len(history))]
    entries: list[dict[str, object]] = []
    for i, line in enumerate(history):  # as BuildKit records them
        line = line.split(" # ")[0]
        if line.startswith("RUN "):
            line = "RUN /bin/sh -c " + line[4:]
        entries.append({"created": created[i], "created_by": line + " # buildkit"})
        if i == 0:
            entries.append({"created": created[i], "created_by": 'CMD ["bash"]', "empty_layer": True})
        if i == 3:
            entries.append({"created": created[i], "created_by": "WORKDIR /srv/app", "empty_layer": True})
    entries.append({"created": created[-1], "created_by": 'ENTRYPOINT ["/usr/bin/tini"]', "empty_layer": True})
    return {
        "architecture": "amd64",
        "os": "linux",
        "created": created[-1],
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": ["bash"], "WorkingDir": "/srv/app", "User": "1000"},
        "rootfs": {"type": "layers", "diff_ids": [d.digest for d in layers]},
        "history": entries,
    }


def _manifest(blobs: BlobWriter, layers: list[Descriptor], history: list[str]) -> Descriptor:
    config = blobs.write_json(CONFIG_MEDIA_TYPE, _config(layers, history))
    return blobs.write_json(MANIFEST_MEDIA_TYPE, {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": config.as_json(),
        "layers": [d.as_json() for d in layers],
    })


@dataclass
class FixtureInfo:
    """What was written: for the report's header."""

    entries_a: int
    entries_b: int  # in B's own layers (the rest it shares with A)
    files_merged_a: int
    bytes_a: int
    counts: dict[str, int]
    layer_entries: list[int]  # A's, non-directories, bottom first


def write_fixture(layout: Path) -> FixtureInfo:
    """Write both images into one OCI layout at `layout` (built under .partial)."""
    tmp = layout.with_name(layout.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    layers_a, layers_b = generate()
    blobs = BlobWriter(tmp)
    content = Content()
    totals: dict[str, int] = {}
    tree = Tree()
    descs_a, branch, per_layer = [], None, []
    for i, layer in enumerate(layers_a):
        desc, counts = _blob(blobs, layer, tree, i, content)
        descs_a.append(desc)
        per_layer.append(sum(v for k, v in counts.items() if k != "dir"))
        for k, v in counts.items():
            totals[k] = totals.get(k, 0) + v
        tree.apply(layer, i)
        if i + 1 == SHARED_LAYERS:
            branch = tree.copy()
    assert branch is not None
    entries_a = sum(v for k, v in totals.items() if k != "dir")
    descs_b, b_own = list(descs_a[:SHARED_LAYERS]), 0
    for i, layer in enumerate(layers_b, start=SHARED_LAYERS):
        desc, counts = _blob(blobs, layer, branch, i, content)
        descs_b.append(desc)
        b_own += sum(v for k, v in counts.items() if k != "dir")
        branch.apply(layer, i)
    history_a = [layer.created_by for layer in layers_a]
    history_b = history_a[:SHARED_LAYERS] + [layer.created_by for layer in layers_b]
    manifests = []
    for ref, descs, history in ((IMAGE_A, descs_a, history_a), (IMAGE_B, descs_b, history_b)):
        desc = _manifest(blobs, descs, history)
        manifests.append({**desc.as_json(), "annotations": {"org.opencontainers.image.ref.name": ref}})
    (tmp / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (tmp / "index.json").write_text(json.dumps({"schemaVersion": 2, "mediaType":
                                                "application/vnd.oci.image.index.v1+json",
                                                "manifests": manifests}, indent=2))
    info = FixtureInfo(
        entries_a=entries_a,
        entries_b=b_own,
        files_merged_a=sum(1 for s in tree.paths.values() if s.kind != "dir"),
        bytes_a=sum(d.size for d in descs_a),
        counts=totals,
        layer_entries=per_layer,
    )
    (tmp / "fixture.json").write_text(json.dumps(info.__dict__, indent=2))
    tmp.rename(layout)
    return info


def fixture_info(layout: Path) -> FixtureInfo:
    return FixtureInfo(**json.loads((layout / "fixture.json").read_text()))


if __name__ == "__main__":  # python -m benchlib.inspectimage OUT: write the layout (for a look)
    import sys
    import time

    start = time.monotonic()
    print(write_fixture(Path(sys.argv[1])), f"{time.monotonic() - start:.1f}s")
