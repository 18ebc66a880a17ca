"""The images of the `registry` group, built once, deterministically, and cached as one
OCI layout with gzip layers, as registries serve them:

  pull-a:latest   3 layers, ~300 MB unpacked: a Debian-looking base (packages with
                  binaries, libraries + soname symlinks, docs, locales, man pages,
                  dpkg lists), a runtime layer (a python-like stdlib of many .py/.pyc
                  files, extension modules, more packages, dpkg status rewritten) and
                  an application layer (a node_modules-like tree, assets, a model
                  file, whiteouts and an opaque dir over the layers below)
  pull-b:latest   pull-a's first 2 layers (the same blobs) + an application layer of
                  its own

File sizes follow a log-normal spread (most files a few KB, a long tail of MBs);
contents are seeded pseudo-random: text (compresses ~3x), machine code-like
(~2x), already-compressed (1x). Also the ~50 MB tree the push workload writes into
a container.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import os
import random
import shutil
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from .imagebuild import CachePaths
from .ocilayout import CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, BlobWriter, Descriptor, HashingWriter
from .util import cached_layout, format_duration, log

IMAGE_VERSION = 2  # bump when the generator changes: the cached layout is rebuilt
IMAGE_A, IMAGE_B = "pull-a", "pull-b"
GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TARGETS = {"base": 100 << 20, "runtime": 100 << 20, "app-a": 75 << 20, "app-b": 75 << 20}
CHANGE_BYTES = 50 << 20
MTIME = 1_735_689_600  # 2025-01-01



@dataclass
class Entry:
    """One tar entry; contents are a recipe (kind, size, seed) made while writing."""

    path: str
    kind: str = "file"  # file, dir, symlink, hardlink
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    content: str = "text"  # text, code, packed, literal
    size: int = 0
    seed: int = 0
    literal: bytes = b""
    link: str = ""
    mtime: int = MTIME


WORDS_SEED = 20250101
_SYLLABLES = ("ba be bi bo bu da de di do du ka ke ki ko ku la le li lo lu ma me mi mo mu na ne ni no nu "
              "pa pe pi po pu ra re ri ro ru sa se si so su ta te ti to tu va ve vi vo za ze zi zo x "
              "gen lib core util net sys io fs conf data man doc").split()


class Content:
    """Seeded pseudo-random file contents of three kinds (text, code-like, packed)."""

    def __init__(self) -> None:
        rng = random.Random(WORDS_SEED)
        vocab = ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(3000)]
        weights = [1 / (i + 1) for i in range(len(vocab))]  # Zipf-like, as words are
        punct = [" ", " ", " ", " ", " ", ", ", ". ", "\n", " = ", "(", ")", ": ", "_", "/", "\n    "]
        parts: list[str] = []
        total = 0
        while total < 4 << 20:
            words = rng.choices(vocab, weights, k=64)
            line = "".join(w + rng.choice(punct) for w in words)
            parts.append(line)
            total += len(line)
        self.corpus = "".join(parts).encode()
        self._low = bytes((b % 24) + 0x40 if b % 3 else 0 for b in range(256))  # code-like: few byte values

    def text(self, rng: random.Random, size: int) -> bytes:
        out = [f"# {rng.getrandbits(64):016x}\n".encode()]
        have = len(out[0])
        while have < size:
            take = min(size - have, rng.randint(2048, 65536))
            start = rng.randrange(0, len(self.corpus) - take)
            out.append(self.corpus[start:start + take])
            have += take
        return b"".join(out)[:size]

    def code(self, rng: random.Random, size: int) -> bytes:
        """4 KiB blocks: random, low-entropy, zeros, strings, as in an ELF file."""
        out, have = [], 0
        while have < size:
            pick = rng.random()
            if pick < 0.15:
                block = rng.randbytes(4096)
            elif pick < 0.70:
                block = rng.randbytes(4096).translate(self._low)
            elif pick < 0.85:
                block = bytes(4096)
            else:
                start = rng.randrange(0, len(self.corpus) - 4096)
                block = self.corpus[start:start + 4096]
            out.append(block)
            have += 4096
        return b"".join(out)[:size]

    def packed(self, rng: random.Random, size: int) -> bytes:
        return rng.randbytes(size)

    def make(self, entry: Entry) -> bytes:
        if entry.content == "literal":
            return entry.literal
        rng = random.Random(entry.seed)
        return getattr(self, entry.content)(rng, entry.size)


def _size(rng: random.Random, median: int, sigma: float, cap: int) -> int:
    return max(0, min(cap, int(rng.lognormvariate(math.log(median), sigma))))


class TreeBuilder:
    """Entries of one layer, grown package by package until the layer's budget."""

    def __init__(self, seed: int, budget: int) -> None:
        self.rng = random.Random(seed)
        self.budget = budget
        self.bytes = 0
        self.entries: dict[str, Entry] = {}

    def full(self) -> bool:
        return self.bytes >= self.budget

    def name(self, parts: int = 2) -> str:
        return "".join(self.rng.choice(_SYLLABLES) for _ in range(self.rng.randint(1, parts)))

    def file(self, path: str, content: str, size: int, mode: int = 0o644, uid: int = 0, gid: int = 0) -> Entry:
        entry = Entry(path, "file", mode, uid, gid, content, size, self.rng.getrandbits(63),
                      mtime=MTIME - self.rng.randrange(0, 86400 * 400))
        self._put(entry)
        return entry

    def _put(self, entry: Entry) -> None:
        """Add or replace an entry (generated names collide now and then), counting bytes."""
        old = self.entries.get(entry.path)
        self.bytes += entry.size - (old.size if old is not None and old.kind == "file" else 0)
        self.entries[entry.path] = entry

    def literal(self, path: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
        self._put(Entry(path, "file", mode, uid, gid, "literal", len(data), literal=data))

    def dir(self, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        self.entries[path] = Entry(path, "dir", mode, uid, gid)

    def symlink(self, path: str, target: str) -> None:
        self.entries[path] = Entry(path, "symlink", 0o777, link=target)

    def hardlink(self, path: str, target: str) -> None:
        self.entries[path] = Entry(path, "hardlink", self.entries[target].mode, link=target)

    def package(self, name: str, *, bins: tuple[int, int] = (0, 4), libs: tuple[int, int] = (0, 2),
                data: tuple[int, int] = (0, 30), locales: list[str] | None = None) -> None:
        """What a Debian package installs, and its dpkg bookkeeping."""
        r = self.rng
        owned: list[str] = []

        def add(path: str, content: str, size: int, mode: int = 0o644) -> None:
            self.file(path, content, size, mode)
            owned.append(path)

        for _ in range(r.randint(*bins)):
            sbin = r.random() < 0.2
            add(f"usr/{'sbin' if sbin else 'bin'}/{name}{'-' + self.name(1) if r.random() < 0.6 else ''}",
                "code", _size(r, 48 << 10, 1.3, 4 << 20), 0o755)
            if r.random() < 0.5:
                add(f"usr/share/man/man{8 if sbin else 1}/{name}-{self.name(1)}.{8 if sbin else 1}.gz",
                    "packed", _size(r, 3 << 10, 0.8, 64 << 10))
        for _ in range(r.randint(*libs)):
            lib = f"lib{name}{self.name(1) if r.random() < 0.4 else ''}"
            major = r.randint(0, 6)
            real = f"{lib}.so.{major}.{r.randint(0, 30)}.{r.randint(0, 9)}"
            add(f"usr/lib/x86_64-linux-gnu/{real}", "code", _size(r, 160 << 10, 1.2, 8 << 20))
            self.symlink(f"usr/lib/x86_64-linux-gnu/{lib}.so.{major}", real)
            owned.append(f"usr/lib/x86_64-linux-gnu/{lib}.so.{major}")
        share = f"usr/share/{name}"
        for i in range(r.randint(*data)):
            sub = f"{share}/{self.name(1)}" if r.random() < 0.5 else share
            kind = r.choices(["text", "code", "packed"], [6, 2, 2])[0]
            add(f"{sub}/{self.name(2)}{i}.{r.choice(['conf', 'dat', 'txt', 'xml', 'json', 'map'])}",
                kind, _size(r, 2 << 10, 1.6, 2 << 20))
        for lang in locales or []:
            if r.random() < 0.5:
                add(f"usr/share/locale/{lang}/LC_MESSAGES/{name}.mo", "code", _size(r, 12 << 10, 1.0, 400 << 10))
        if r.random() < 0.3:
            add(f"etc/{name}/{name}.conf", "text", _size(r, 2 << 10, 1.0, 64 << 10))
        add(f"usr/share/doc/{name}/copyright", "text", _size(r, 6 << 10, 0.9, 120 << 10))
        add(f"usr/share/doc/{name}/changelog.Debian.gz", "packed", _size(r, 4 << 10, 1.0, 200 << 10))
        self.literal(f"var/lib/dpkg/info/{name}.list", "".join(f"/{p}\n" for p in ["."] + owned).encode())
        md5 = "".join(f"{hashlib.md5(p.encode()).hexdigest()}  {p}\n" for p in owned)
        self.literal(f"var/lib/dpkg/info/{name}.md5sums", md5.encode())

    def finish(self) -> list[Entry]:
        """Every parent directory present, parents before children, sorted."""
        for path in list(self.entries):
            parent = os.path.dirname(path)
            while parent and parent not in self.entries:
                self.dir(parent)
                parent = os.path.dirname(parent)
        return [self.entries[p] for p in sorted(self.entries, key=lambda p: p.split("/"))]


LOCALES = ["de", "es", "fr", "it", "ja", "nl", "pl", "pt_BR", "ru", "sv", "tr", "uk", "zh_CN", "zh_TW"]


def _dpkg_status(seed: int, packages: list[str]) -> bytes:
    rng = random.Random(seed)
    blocks = [f"Package: {p}\nStatus: install ok installed\nPriority: optional\nInstalled-Size: "
              f"{rng.randint(10, 9000)}\nVersion: {rng.randint(0, 9)}.{rng.randint(0, 40)}-{rng.randint(1, 9)}\n"
              f"Description: the {p} package\n" for p in packages]
    return "\n".join(blocks).encode()


def base_layer() -> list[Entry]:
    """A merged-/usr Debian minbase look-alike."""
    t = TreeBuilder(1, LAYER_TARGETS["base"])
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
        t.symlink(link, target)
    for d in ("dev", "proc", "sys", "run", "mnt", "media", "srv", "opt", "home", "boot", "usr/local/bin"):
        t.dir(d)
    t.dir("tmp", 0o1777)
    t.dir("var/tmp", 0o1777)
    t.dir("root", 0o700)
    t.dir("var/mail", 0o2775, gid=8)
    t.literal("etc/os-release", b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
              b'VERSION_ID="12"\nID=debian\n')
    t.literal("etc/passwd", b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
              b"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
    t.literal("etc/group", b"root:x:0:\ndaemon:x:1:\nshadow:x:42:\nmail:x:8:\nnogroup:x:65534:\n")
    t.literal("etc/shadow", b"root:*:19000:0:99999:7:::\n", 0o640, gid=42)
    t.literal("etc/hostname", b"bench\n")
    t.file("usr/lib64/ld-linux-x86-64.so.2", "code", 210 << 10, 0o755)
    t.file("usr/lib/x86_64-linux-gnu/libc.so.6", "code", 1900 << 10, 0o755)
    t.file("usr/bin/bash", "code", 1230 << 10, 0o755)
    t.symlink("usr/bin/sh", "dash")
    t.file("usr/bin/dash", "code", 125 << 10, 0o755)
    t.file("usr/bin/su", "code", 72 << 10, 0o4755)
    t.file("usr/bin/perl", "code", 3800 << 10, 0o755)
    t.hardlink("usr/bin/perl5.36.0", "usr/bin/perl")
    t.file("usr/bin/coreutils-multi", "code", 1400 << 10, 0o755)
    for tool in ("ls", "cp", "mv", "rm", "cat", "echo", "mkdir", "chmod", "chown", "ln", "head", "tail", "sort"):
        t.file(f"usr/bin/{tool}", "code", _size(t.rng, 90 << 10, 0.5, 400 << 10), 0o755)
    packages = []
    while not t.full():
        name = t.name(3)
        packages.append(name)
        t.package(name, locales=LOCALES)
    t.literal("var/lib/dpkg/status", _dpkg_status(11, packages))
    return t.finish()


def runtime_layer() -> list[Entry]:
    """python3 installed: a stdlib of many small modules with bytecode, extension
    modules, and a handful of library packages; dpkg's status rewritten."""
    t = TreeBuilder(2, LAYER_TARGETS["runtime"])
    stdlib = "usr/lib/python3.11"
    t.file("usr/bin/python3.11", "code", 6600 << 10, 0o755)
    t.symlink("usr/bin/python3", "python3.11")
    while t.bytes < t.budget * 0.55:
        pkg = f"{stdlib}/{t.name(2)}"
        for _ in range(t.rng.randint(1, 25)):
            mod = t.name(3)
            size = _size(t.rng, 9 << 10, 1.1, 400 << 10)
            t.file(f"{pkg}/{mod}.py", "text", size)
            t.file(f"{pkg}/__pycache__/{mod}.cpython-311.pyc", "code", int(size * 0.8))
        if t.rng.random() < 0.15:
            t.file(f"{stdlib}/lib-dynload/_{t.name(2)}.cpython-311-x86_64-linux-gnu.so", "code",
                   _size(t.rng, 60 << 10, 1.0, 2 << 20))
    packages = []
    while not t.full():
        name = t.name(3)
        packages.append(name)
        t.package(name, bins=(0, 2), libs=(1, 3), data=(0, 15), locales=LOCALES[:6])
    t.literal("var/lib/dpkg/status", _dpkg_status(11, ["base"] * 60 + packages))
    return t.finish()


def app_layer(name: str, seed: int, removes: list[str]) -> list[Entry]:
    """An application: a node_modules-like tree of many small files, built assets,
    one large model file; some files of the layers below deleted (whiteouts) and
    one directory replaced (opaque)."""
    t = TreeBuilder(seed, LAYER_TARGETS[name])
    root = f"opt/{name}"
    t.file(f"{root}/models/weights.bin", "packed", 18 << 20)
    for i in range(12):
        t.file(f"{root}/static/img/asset{i}.png", "packed", _size(t.rng, 300 << 10, 1.0, 3 << 20))
    while not t.full():
        mod = f"{root}/node_modules/{'@' + t.name(1) + '/' if t.rng.random() < 0.2 else ''}{t.name(3)}"
        t.literal(f"{mod}/package.json", json.dumps({"name": mod.rsplit('/', 1)[-1], "version": "1.0.0"}).encode())
        for _ in range(t.rng.randint(2, 40)):
            sub = t.rng.choice(["lib", "dist", "src", "lib/internal", ""])
            t.file(f"{mod}/{sub + '/' if sub else ''}{t.name(3)}.js", "text", _size(t.rng, 3 << 10, 1.3, 1 << 20))
        if t.rng.random() < 0.3:
            t.symlink(f"{root}/node_modules/.bin/{t.name(2)}", f"../{mod.split('node_modules/', 1)[1]}/cli.js")
    for path in removes:
        parent, base = os.path.split(path)
        t.literal(f"{parent}/.wh.{base}", b"")
    t.dir("var/cache/app", 0o755)
    t.literal("var/cache/app/.wh..wh..opq", b"")
    t.literal("var/cache/app/state", f"{name}\n".encode())
    t.literal(f"etc/{name}.conf", f"listen = 0.0.0.0:8080\nname = {name}\n".encode())
    return t.finish()


def _tarinfo(entry: Entry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.path + ("/" if entry.kind == "dir" else ""))
    info.mode, info.uid, info.gid, info.mtime = entry.mode, entry.uid, entry.gid, entry.mtime
    info.uname = info.gname = ""
    info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                 "hardlink": tarfile.LNKTYPE}[entry.kind]
    info.linkname = entry.link
    return info


@dataclass
class Layer:
    descriptor: Descriptor
    diff_id: str
    unpacked: int  # tar bytes
    files: int


def write_gzip_layer(blobs: BlobWriter, tag: str, entries: list[Entry], content: Content) -> Layer:
    """One gzip layer blob (stable bytes: gzip mtime 0, no name), digests taken while writing."""
    tmp = blobs.blobs / f".tmp-{os.getpid()}-{tag}"
    with open(tmp, "wb") as f:
        compressed = HashingWriter(f)
        with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=6) as gz:
            raw = HashingWriter(gz)  # type: ignore[arg-type]
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                for entry in entries:
                    info = _tarinfo(entry)
                    if entry.kind == "file":
                        data = content.make(entry)
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
                    else:
                        tar.addfile(info)
        f.flush()
        os.fsync(f.fileno())
    tmp.rename(blobs.blobs / compressed.digest.split(":", 1)[1])
    files = sum(e.kind == "file" for e in entries)
    return Layer(Descriptor(GZIP_LAYER, compressed.digest, compressed.size), raw.digest, raw.size, files)


def _image(blobs: BlobWriter, name: str, layers: list[Layer], history: list[str]) -> dict[str, object]:
    config = {
        "architecture": "amd64", "os": "linux", "created": "2025-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": ["/bin/sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created": "2025-01-01T00:00:00Z", "created_by": h} for h in history],
    }
    config_desc = blobs.write_json(CONFIG_MEDIA_TYPE, config)
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE, "config": config_desc.as_json(),
                "layers": [layer.descriptor.as_json() for layer in layers]}
    desc = blobs.write_json(MANIFEST_MEDIA_TYPE, manifest)
    return {**desc.as_json(), "annotations": {"org.opencontainers.image.ref.name": f"{name}:latest"}}


def image_layout(paths: CachePaths) -> Path:
    return paths.root / "registry" / f"oci-v{IMAGE_VERSION}"


def ensure_images(paths: CachePaths, rebuild: bool = False) -> Path:
    """Build the OCI layout with pull-a and pull-b once (older versions removed)."""
    layout = image_layout(paths)
    if cached_layout(layout, rebuild):
        return layout
    log("building the registry images pull-a, pull-b (3 gzip layers each, 2 shared) ...")
    start = time.monotonic()
    partial = layout.with_name(layout.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    blobs, content = BlobWriter(partial), Content()
    base = base_layer()
    docs = sorted({e.path.split("/")[3] for e in base if e.path.startswith("usr/share/doc/") and e.path.count("/") >= 3})
    built = {}
    for tag, make in (("base", lambda: base), ("runtime", runtime_layer),
                      ("app-a", lambda: app_layer("app-a", 3, [f"usr/share/doc/{docs[0]}", "usr/bin/su"])),
                      ("app-b", lambda: app_layer("app-b", 4, [f"usr/share/doc/{docs[1]}"]))):
        built[tag] = write_gzip_layer(blobs, tag, make(), content)
        log(f"  layer {tag}: {built[tag].files} files, {built[tag].unpacked / 1e6:.0f} MB, "
            f"{built[tag].descriptor.size / 1e6:.0f} MB gzip")
    history = ["debootstrap --variant=minbase bookworm (synthetic)", "apt-get install python3 (synthetic)"]
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        _image(blobs, IMAGE_A, [built["base"], built["runtime"], built["app-a"]], [*history, "COPY app-a"]),
        _image(blobs, IMAGE_B, [built["base"], built["runtime"], built["app-b"]], [*history, "COPY app-b"]),
    ]}
    (partial / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (partial / "index.json").write_text(json.dumps(index, indent=2))
    summary = {tag: {"digest": layer.descriptor.digest, "gzip": layer.descriptor.size, "tar": layer.unpacked,
                     "files": layer.files} for tag, layer in built.items()}
    (partial / "bench-layers.json").write_text(json.dumps(summary, indent=2))
    partial.rename(layout)
    log(f"built the registry images in {format_duration(time.monotonic() - start)}")
    return layout


def layer_summary(layout: Path) -> dict[str, dict[str, object]]:
    return json.loads((layout / "bench-layers.json").read_text())


def write_change_tree(paths: CachePaths) -> Path:
    """The ~50 MB a container writes before its commit: a new release of the app
    (many small files, some large ones), as a directory to copy in."""
    out = paths.root / "registry" / f"change-v{IMAGE_VERSION}"
    if out.exists():
        return out
    for old in out.parent.glob("change-v*"):
        shutil.rmtree(old)
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    t = TreeBuilder(5, CHANGE_BYTES)
    t.file("release/bundle.js.map", "text", 6 << 20)
    t.file("release/assets/video.webm", "packed", 12 << 20)
    while not t.full():
        t.file(f"release/{t.rng.choice(['lib', 'dist', 'locales', 'lib/chunks'])}/{t.name(3)}.js",
               "text", _size(t.rng, 4 << 10, 1.3, 2 << 20))
    content = Content()
    for entry in t.finish():
        target = partial / entry.path
        if entry.kind == "dir":
            target.mkdir(parents=True, exist_ok=True)
        elif entry.kind == "file":
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content.make(entry))
    for path in [partial, *partial.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    partial.rename(out)
    return out
