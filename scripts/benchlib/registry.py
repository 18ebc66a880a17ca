"""The `registry` group: pull to first browse, a shared-layer pull and a push, timed
against Debian's docker-registry (the CNCF distribution server) on 127.0.0.1.

The images, pull-a (3 gzip layers, ~300 MB unpacked) and pull-b (pull-a's first
2 layers + one of its own), are built by registryimage.py.

Each figure is a median of --reps runs, each into an EMPTY store (a fresh
directory; podman: a fresh --root/--runroot), caches dropped before the timed
commands (`sync; echo 3 > /proc/sys/vm/drop_caches`). Every client runs as the
unprivileged bench user (layerfs-bench), rootless, as the container group does;
layerfs also as root (its own store). Registry traffic is counted from the
registry's own log (JSON, one line per request: method, path, status, bytes).

  pull to first browse  layerfs: `pull` + `mount IMAGE MP` + `ls -la MP`
                        skopeo + umoci: `skopeo copy docker://.. oci:DIR:latest` +
                          `umoci unpack --rootless` + `ls -la BUNDLE/rootfs`
                        podman: `podman pull` + `podman unshare sh -c 'podman image
                          mount IMG && ls -la $m'` (runc, fuse-overlayfs storage)
  shared-layer pull     pull-a present, `pull pull-b`: time, blobs and bytes served
  push                  a container of pull-a with ~50 MB written into it, committed,
                        pushed to a new repository (base layers: cross-repository
                        mount) and to pull-a's own repository (base layers: HEAD says
                        present); beside skopeo copy of the same image from the layerfs
                        store (an OCI layout) and podman push of a podman commit of the
                        same change
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import mounts
from .imagebuild import CachePaths
from .rootless import USER, BenchUser, _install_peers
from .ocilayout import MANIFEST_MEDIA_TYPE
from .registryimage import IMAGE_A, IMAGE_B, ensure_images, layer_summary, write_change_tree
from .util import BenchError, drop_caches, log

REGISTRY_GROUPS = ["registry"]
PULL_LIMIT = 0.6  # pull to first browse: layerfs <= 0.6x podman
REGISTRY_BIN = "/usr/bin/docker-registry"
LAYERFS_PULL_FLAGS = ("--tls-verify=false", "-q")


# ---------------------------------------------------------------- the registry


@dataclass
class Traffic:
    """What the registry served or took during one command, from its log."""

    blob_gets: dict[str, int] = field(default_factory=dict)  # digest -> bytes sent
    manifest_gets: int = 0
    blob_heads: int = 0
    head_hits: int = 0  # HEADs that found the blob
    uploads: dict[str, int] = field(default_factory=dict)  # digest -> size (completed uploads)
    mounts: int = 0  # cross-repository mounts that succeeded
    requests: int = 0
    top_layer: str = ""  # a push: the pushed manifest's last layer (media type, size)

    @property
    def bytes_in(self) -> int:
        return sum(self.blob_gets.values())

    def as_json(self) -> dict[str, object]:
        return {"blob_gets": self.blob_gets, "manifest_gets": self.manifest_gets, "blob_heads": self.blob_heads,
                "head_hits": self.head_hits, "uploads": self.uploads, "mounts": self.mounts,
                "requests": self.requests, "top_layer": self.top_layer}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Registry:
    """docker-registry on 127.0.0.1 (plain HTTP), storage in a fresh directory."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.storage = workdir / "storage"
        self.log_path = workdir / "registry.log"
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._sentinels = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        if not Path(REGISTRY_BIN).exists():
            raise BenchError(f"{REGISTRY_BIN} is missing (scripts/setup installs Debian's docker-registry)")
        self.storage.mkdir(parents=True)
        config = self.workdir / "config.yml"
        config.write_text(f"""version: 0.1
log:
  level: info
  formatter: json
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {self.storage}
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: {self.host}
  secret: layerfs-bench
""")
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace").strip().splitlines()[-3:]
                self.stop()
                raise BenchError("docker-registry did not start: " + " | ".join(tail))
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def mark(self) -> int:
        return self.log_path.stat().st_size

    def _sync(self) -> None:
        """A request after the measured command: once its log line is there, the
        command's own requests (all answered before it exited) are logged too."""
        self._sentinels += 1
        probe = f"/v2/?bench-sentinel={self._sentinels}"
        with urllib.request.urlopen(f"http://{self.host}{probe}", timeout=5):
            pass
        deadline = time.monotonic() + 5
        while probe not in self.log_path.read_text(errors="replace")[-200_000:] and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.05)

    def traffic(self, since: int) -> Traffic:
        self._sync()
        found = Traffic()
        with open(self.log_path, "rb") as f:
            f.seek(since)
            lines = f.read().decode(errors="replace").splitlines()
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            uri = str(record.get("http.request.uri", ""))
            method, status = record.get("http.request.method"), int(record.get("http.response.status", 0))
            if not uri.startswith("/v2/") or "bench-sentinel" in uri:
                continue
            found.requests += 1
            path, _, query = uri.partition("?")
            params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
            if "/blobs/uploads/" in path:
                if method == "PUT" and status == 201 and "digest" in params:
                    digest = urllib.request.unquote(params["digest"])
                    found.uploads[digest] = self.blob_size(digest)
                elif method == "POST" and status == 201 and "mount" in params:
                    found.mounts += 1
            elif "/blobs/sha256:" in path:
                digest = path.rsplit("/", 1)[1]
                if method == "GET" and status in (200, 206):
                    found.blob_gets[digest] = found.blob_gets.get(digest, 0) + int(record.get(
                        "http.response.written", 0))
                elif method == "HEAD":
                    found.blob_heads += 1
                    found.head_hits += status == 200
            elif "/manifests/" in path and method == "GET" and status == 200:
                found.manifest_gets += 1
        return found

    def top_layer(self, ref: str) -> str:
        """The last layer of a pushed manifest, e.g. `tar+gzip 23.9 MB` (asked after
        the command's traffic is counted)."""
        name, tag = ref.split("/", 1)[1].rsplit(":", 1)
        accept = ", ".join([MANIFEST_MEDIA_TYPE, "application/vnd.docker.distribution.manifest.v2+json"])
        request = urllib.request.Request(f"http://{self.host}/v2/{name}/manifests/{tag}", headers={"Accept": accept})
        with urllib.request.urlopen(request, timeout=10) as answer:
            layer = json.loads(answer.read())["layers"][-1]
        kind = str(layer["mediaType"])
        for prefix in ("application/vnd.oci.image.layer.v1.", "application/vnd.docker.image.rootfs.diff."):
            kind = kind.removeprefix(prefix)
        return f"{kind} {_mb(int(layer['size']))}"

    def blob_size(self, digest: str) -> int:
        hexdigest = digest.split(":", 1)[1]
        data = self.storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"
        return data.stat().st_size if data.exists() else 0


# ---------------------------------------------------------------- the clients


class Clients:
    """The commands of every client, for one registry, as the bench user (and root)."""

    def __init__(self, paths: CachePaths, layerfs: Path, registry: Registry, user: BenchUser) -> None:
        self.binary = str(layerfs)
        self.registry = registry
        self.user = user
        self.work = paths.root / "registry" / "run"
        self.mnt = paths.mnt / "registry"
        self.runroot_base = user.runtime_dir / "layerfs-bench-registry"

    def ref(self, image: str, tag: str = "latest") -> str:
        return f"{self.registry.host}/{image}:{tag}"

    def fresh(self, name: str, *, runtime: bool = False) -> Path:
        """An empty directory the bench user owns (its parent made if need be)."""
        base = self.runroot_base if runtime else self.work
        path = base / name
        remove_tree(path)
        path.mkdir(parents=True)
        for p in (base, path):
            os.chown(p, self.user.uid, self.user.gid)
        return path

    def layerfs(self, store: Path, *args: str) -> list[str]:
        return [self.binary, "--root", str(store), *args]

    @staticmethod
    def podman(root: Path, runroot: Path, *args: str) -> list[str]:
        return ["podman", "--root", str(root), "--runroot", str(runroot), "--storage-driver", "overlay",
                "--storage-opt", "overlay.mount_program=/usr/bin/fuse-overlayfs", *args]

    def timed(self, argv: list[str], *, as_root: bool = False) -> float:
        if not as_root:
            return self.user.timed(argv)
        start = time.perf_counter()
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise BenchError(f"`{shlex.join(argv)}` exited {proc.returncode}: "
                             f"{(proc.stderr.strip().splitlines() or [''])[-1]}")
        return elapsed

    def run(self, argv: list[str], *, as_root: bool = False, check: bool = True) -> subprocess.CompletedProcess[str]:
        if not as_root:
            return self.user.run(argv, check=check)
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise BenchError(f"`{shlex.join(argv)}` exited {proc.returncode}: "
                             f"{(proc.stderr.strip().splitlines() or [''])[-1]}")
        return proc


def remove_tree(path: Path) -> None:
    """rm -rf as root (podman's and umoci's trees hold files of subordinate ids)."""
    if path.exists() or path.is_symlink():
        for point in mounts.mounts_under(path):
            mounts.force_unmount(point)
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)
        if path.exists():
            raise BenchError(f"cannot remove {path}")


# ---------------------------------------------------------------- the measurements

TOOLS = ["layerfs", "layerfs-root", "skopeo", "podman"]
COLUMNS = {"layerfs": "layerfs", "layerfs-root": "lfs (root)", "skopeo": "skopeo(+umoci)", "podman": "podman"}
ROW_PULL, ROW_OPEN, ROW_BROWSE = "pull pull-a", "mount + ls -la (umoci: unpack + ls)", "pull to first browse"
ROW_SHARED = "pull pull-b, pull-a present"
ROW_PUSH_NEW, ROW_PUSH_SAME = "push commit, new repository", "push commit, pull-a's repository"


@dataclass
class RegistryResults:
    seconds: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # row -> tool -> samples
    traffic: dict[str, dict[str, list[Traffic]]] = field(default_factory=dict)  # row -> tool -> per rep
    errors: dict[str, str] = field(default_factory=dict)  # tool (or tool + what) -> message
    header: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    layers: dict[str, dict[str, object]] = field(default_factory=dict)
    reps: int = 0
    load: tuple[float, float] = (0.0, 0.0)

    def add(self, row: str, tool: str, seconds: float, traffic: Traffic | None = None) -> None:
        self.seconds.setdefault(row, {}).setdefault(tool, []).append(seconds)
        if traffic is not None:
            self.traffic.setdefault(row, {}).setdefault(tool, []).append(traffic)

    def median(self, row: str, tool: str) -> float | None:
        values = self.seconds.get(row, {}).get(tool)
        return statistics.median(values) if values else None

    def ratio(self, row: str, of: str, over: str) -> float | None:
        a, b = self.median(row, of), self.median(row, over)
        return a / b if a is not None and b else None

    def targets(self) -> list[tuple[str, str, str]]:
        """(what, got, status) for the issue's targets."""
        out = []
        ratio = self.ratio(ROW_BROWSE, "layerfs", "podman")
        out.append((f"pull to first browse: layerfs <= {PULL_LIMIT}x podman (rootless, fuse-overlayfs)",
                    "n/a" if ratio is None else f"{ratio:.2f}x",
                    "n/a" if ratio is None else ("PASS" if ratio <= PULL_LIMIT else "FAIL")))
        new_layer = str(self.layers.get("app-b", {}).get("digest", ""))
        shared = [t for t in self.traffic.get(ROW_SHARED, {}).get("layerfs", [])]
        if shared:
            extra = {d for t in shared for d in t.blob_gets if d != new_layer and d in self._layer_digests()}
            missing = any(new_layer not in t.blob_gets for t in shared)
            got = _blobs_cell(shared[-1], self._layer_digests())
            out.append(("shared-layer pull (pull-b, pull-a present): layerfs downloads only the new layer",
                        got, "FAIL" if extra or missing else "PASS"))
        else:
            out.append(("shared-layer pull (pull-b, pull-a present): layerfs downloads only the new layer",
                        "n/a", "n/a"))
        for row in (ROW_PUSH_NEW, ROW_PUSH_SAME):
            pushes = self.traffic.get(row, {}).get("layerfs", [])
            how = "cross-repository mount" if row == ROW_PUSH_NEW else "HEAD"
            what = f"{row}: layerfs uploads only the new layer + config (base layers by {how})"
            if not pushes:
                out.append((what, "n/a", "n/a"))
                continue
            bad = [t for t in pushes if len(t.uploads) > 2 or set(t.uploads) & self._layer_digests()]
            out.append((what, _push_cell(pushes[-1]), "FAIL" if bad else "PASS"))
        return out

    def _layer_digests(self) -> set[str]:
        return {str(layer["digest"]) for layer in self.layers.values()}

    def failed(self) -> bool:
        return any(status == "FAIL" for _, _, status in self.targets())

    def as_json(self) -> dict[str, object]:
        return {
            "reps": self.reps, "header": self.header, "notes": self.notes, "layers": self.layers,
            "seconds": {row: {tool: {"median": statistics.median(v), "samples": v} for tool, v in by.items()}
                        for row, by in self.seconds.items()},
            "traffic": {row: {tool: [t.as_json() for t in ts] for tool, ts in by.items()}
                        for row, by in self.traffic.items()},
            "targets": [{"target": w, "got": g, "status": s} for w, g, s in self.targets()],
            "errors": self.errors, "loadavg_start": self.load[0], "loadavg_end": self.load[1],
        }


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _blobs_cell(t: Traffic, layer_digests: set[str]) -> str:
    layers = [d for d in t.blob_gets if d in layer_digests]
    others = len(t.blob_gets) - len(layers)
    return f"{len(layers)} layer{'s' if len(layers) != 1 else ''} + {others} other, {_mb(t.bytes_in)}"


def _push_cell(t: Traffic) -> str:
    return (f"{len(t.uploads)} up ({_mb(sum(t.uploads.values()))}), {t.mounts} mounted, "
            f"{t.head_hits}/{t.blob_heads} HEAD hit" + (f"; new layer pushed as {t.top_layer}" if t.top_layer else ""))


class Bench:
    """One run of the group: the registry up, the images pushed, every client measured."""

    def __init__(self, paths: CachePaths, layerfs: Path, reps: int) -> None:
        self.paths, self.reps = paths, reps
        self.results = RegistryResults(reps=reps)
        self.layout = ensure_images(paths)
        self.results.layers = layer_summary(self.layout)
        self.change = write_change_tree(paths)
        _install_peers()
        if not shutil.which("umoci"):
            raise BenchError("umoci is missing (scripts/setup installs it)")
        self.user = BenchUser()
        self.user.podman_config()  # runc, cgroupfs, fuse-overlayfs; the commands also name the storage
        if subprocess.run(["chmod", "0666", "/dev/fuse"], capture_output=True).returncode != 0:
            raise BenchError("cannot make /dev/fuse usable for the bench user")
        work = paths.root / "registry" / "run"
        remove_tree(work)
        work.mkdir(parents=True)
        self.registry = Registry(work / "registry")
        self.registry.workdir.mkdir()
        self.c = Clients(paths, layerfs, self.registry, self.user)
        self.mnt = paths.mnt / "registry"
        remove_tree(self.mnt)
        self.mnt.mkdir(parents=True)
        self.layerfs_error = self._layerfs_unavailable(layerfs, "pull")
        self.push_error = self.layerfs_error or self._layerfs_unavailable(layerfs, "push")

    @staticmethod
    def _layerfs_unavailable(layerfs: Path, command: str) -> str | None:
        if not layerfs.exists():
            return f"{layerfs} not found"
        probe = subprocess.run([str(layerfs), command, "--help"], capture_output=True, text=True,
                               stdin=subprocess.DEVNULL)
        if probe.returncode != 0:
            if "invalid choice" in probe.stderr:
                return f"this layerfs has no `{command}` command (yet)"
            tail = (probe.stderr.strip().splitlines() or [""])[-1]
            return f"`layerfs {command} --help` exited {probe.returncode}: {tail[-160:]}"
        return None

    # -- the run --------------------------------------------------------------------

    def run(self) -> RegistryResults:
        load_start = os.getloadavg()[0]
        self.registry.start()
        record = mounts.register_leftover("docker-registry", self.registry.stop)
        try:
            self._populate()
            measures: list[tuple[str, Callable[[int], None]]] = []
            if self.layerfs_error is None:
                measures += [("layerfs", lambda rep: self._browse_layerfs(rep, as_root=False)),
                             ("layerfs-root", lambda rep: self._browse_layerfs(rep, as_root=True))]
            else:
                self.results.errors["layerfs"] = self.layerfs_error
            measures += [("skopeo", self._browse_skopeo), ("podman", self._browse_podman)]
            failed: set[str] = set()
            for rep in range(1, self.reps + 1):
                for tool, measure in measures:
                    if tool in failed:
                        continue
                    log(f"registry: pull to first browse + shared-layer pull, {tool}, rep {rep}/{self.reps}")
                    try:
                        measure(rep)
                    except BenchError as exc:
                        log(f"registry: {tool} failed: {exc}")
                        self.results.errors[tool] = str(exc)
                        failed.add(tool)
            self._push_all()
        finally:
            mounts.discard(record)
            remove_tree(self.c.work)
            remove_tree(self.c.runroot_base)
        self.results.header = self._header()
        self.results.load = (load_start, os.getloadavg()[0])
        return self.results

    def _populate(self) -> None:
        log(f"registry: docker-registry on {self.registry.host}; pushing pull-a and pull-b with skopeo")
        for image in (IMAGE_A, IMAGE_B):
            subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{self.layout}:{image}:latest",
                            f"docker://{self.c.ref(image)}"], check=True, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL)

    def _header(self) -> list[str]:
        layers = self.results.layers

        def size(*tags: str) -> str:
            tar = sum(int(layers[t]["tar"]) for t in tags)
            gz = sum(int(layers[t]["gzip"]) for t in tags)
            files = sum(int(layers[t]["files"]) for t in tags)
            return f"{tar / 1e6:.0f} MB unpacked, {gz / 1e6:.0f} MB gzip, {files:,} files"

        return [f"pull-a: 3 gzip layers ({size('base', 'runtime', 'app-a')}); pull-b: pull-a's first 2 layers "
                f"+ one of its own ({size('app-b')}); docker-registry {self.registry.host}, plain HTTP"]

    def _timed_traffic(self, argv: list[str], *, as_root: bool = False) -> tuple[float, Traffic]:
        since = self.registry.mark()
        seconds = self.c.timed(argv, as_root=as_root)
        return seconds, self.registry.traffic(since)

    # -- pull to first browse -------------------------------------------------------

    def _own(self, path: Path, as_root: bool) -> Path:
        if as_root:
            os.chown(path, 0, 0)
        return path

    def _browse_layerfs(self, rep: int, *, as_root: bool) -> None:
        c, tool = self.c, "layerfs-root" if as_root else "layerfs"
        store = self._own(c.fresh(f"{tool}-store"), as_root)
        mp = self.mnt / tool
        remove_tree(mp)
        mp.mkdir()
        if not as_root:
            os.chown(mp, self.user.uid, self.user.gid)
        ref_a, ref_b = c.ref(IMAGE_A), c.ref(IMAGE_B)
        drop_caches()
        pull, traffic = self._timed_traffic(c.layerfs(store, "pull", *LAYERFS_PULL_FLAGS, ref_a), as_root=as_root)
        start = time.perf_counter()
        c.run(c.layerfs(store, "mount", ref_a, str(mp)), as_root=as_root)
        record = mounts.register(mp, lambda: c.run(c.layerfs(store, "umount", str(mp)), as_root=as_root,
                                                   check=False) and None)
        try:
            c.run(["ls", "-la", str(mp)], as_root=as_root)
            opened = time.perf_counter() - start
        finally:
            mounts.release(record)
        self._browse_figures(tool, pull, opened, traffic)
        drop_caches()
        shared, traffic = self._timed_traffic(c.layerfs(store, "pull", *LAYERFS_PULL_FLAGS, ref_b), as_root=as_root)
        self.results.add(ROW_SHARED, tool, shared, traffic)
        remove_tree(store)

    def _browse_figures(self, tool: str, pull: float, opened: float, traffic: Traffic) -> None:
        self.results.add(ROW_PULL, tool, pull, traffic)
        self.results.add(ROW_OPEN, tool, opened)
        self.results.add(ROW_BROWSE, tool, pull + opened)
        log(f"registry: {tool}: pull {pull:.2f}s + open {opened:.2f}s; {len(traffic.blob_gets)} blobs, "
            f"{_mb(traffic.bytes_in)}")

    def _browse_skopeo(self, rep: int) -> None:
        c = self.c
        base = c.fresh("skopeo")
        layout, bundle = base / "oci", base / "bundle"
        copy = ["skopeo", "copy", "-q", "--src-tls-verify=false"]
        drop_caches()
        pull, traffic = self._timed_traffic([*copy, f"docker://{c.ref(IMAGE_A)}", f"oci:{layout}:latest"])
        start = time.perf_counter()
        c.run(["umoci", "unpack", "--rootless", "--image", f"{layout}:latest", str(bundle)])
        c.run(["ls", "-la", f"{bundle}/rootfs"])
        self._browse_figures("skopeo", pull, time.perf_counter() - start, traffic)
        drop_caches()
        shared, traffic = self._timed_traffic([*copy, f"docker://{c.ref(IMAGE_B)}", f"oci:{layout}:b"])
        self.results.add(ROW_SHARED, "skopeo", shared, traffic)
        remove_tree(base)

    def _browse_podman(self, rep: int) -> None:
        c = self.c
        root, runroot = c.fresh("podman-root"), c.fresh("podman", runtime=True)

        def p(*args: str) -> list[str]:
            return c.podman(root, runroot, *args)

        ref_a, ref_b = c.ref(IMAGE_A), c.ref(IMAGE_B)
        drop_caches()
        try:
            pull, traffic = self._timed_traffic(p("pull", "-q", "--tls-verify=false", ref_a))
            script = f'm=$({shlex.join(p("image", "mount", ref_a))}) && ls -la "$m"'
            opened = c.timed(p("unshare", "sh", "-c", script))
            c.run(p("unshare", *p("image", "umount", ref_a)))
            self._browse_figures("podman", pull, opened, traffic)
            drop_caches()
            shared, traffic = self._timed_traffic(p("pull", "-q", "--tls-verify=false", ref_b))
            self.results.add(ROW_SHARED, "podman", shared, traffic)
        finally:
            c.run(p("unshare", *p("image", "umount", "-a")), check=False)
            remove_tree(root)
            remove_tree(runroot)

    # -- push -----------------------------------------------------------------------

    def _push_all(self) -> None:
        pushers: list[tuple[str, Callable[[], None]]] = []
        if self.layerfs_error is None:
            pushers.append(("layerfs", self._push_layerfs))  # and skopeo, of the layerfs commit
        else:
            self.results.notes.append("push: without `layerfs pull` there is no layerfs commit for skopeo to push")
        if self.push_error is not None and self.layerfs_error is None:
            self.results.errors["layerfs push"] = self.push_error
        pushers.append(("podman", self._push_podman))
        for tool, push in pushers:
            log(f"registry: push of a committed container, {tool}")
            try:
                push()
            except BenchError as exc:
                log(f"registry: push ({tool}) failed: {exc}")
                self.results.errors[f"{tool} push"] = str(exc)

    def _destination(self, case: str, tool: str, rep: int) -> str:
        """A new repository per push (nothing of the commit there yet), or a new tag
        of pull-a's repository (its base layers there)."""
        return self.c.ref(f"pushed-{tool}-{rep}", "1") if case == "new" else self.c.ref(IMAGE_A, f"{tool}-{rep}")

    def _layerfs_commit(self, store: Path, mp: Path, name: str, image: str) -> None:
        """A container of pull-a, ~50 MB written into it through its mount, committed."""
        c = self.c
        c.run(c.layerfs(store, "create", "--name", name, c.ref(IMAGE_A)))
        c.run(c.layerfs(store, "mount", name, str(mp)))
        record = mounts.register(mp, lambda: c.run(c.layerfs(store, "umount", str(mp)), check=False) and None)
        try:
            c.run(["sh", "-c", f"cp -r {shlex.quote(str(self.change))} {shlex.quote(str(mp))}/srv/release && "
                               f"echo {shlex.quote(name)} > {shlex.quote(str(mp))}/srv/release/STAMP"])
        finally:
            mounts.release(record)
        c.run(c.layerfs(store, "commit", name, image))
        c.run(c.layerfs(store, "rm", "-f", name))

    def _store_ref(self, store: Path, image: str) -> str:
        """The name `image` has in the store's index.json (skopeo's oci: reference)."""
        index = json.loads((store / "index.json").read_text())
        names = [m.get("annotations", {}).get("org.opencontainers.image.ref.name", "") for m in index["manifests"]]
        for name in names:
            if name == image or name.endswith("/" + image):
                return name
        raise BenchError(f"{image} not found in {store}/index.json (names: {', '.join(names)})")

    def _push_layerfs(self) -> None:
        c = self.c
        store = c.fresh("push-store")
        mp = self.mnt / "push"
        remove_tree(mp)
        mp.mkdir()
        os.chown(mp, self.user.uid, self.user.gid)
        c.run(c.layerfs(store, "pull", *LAYERFS_PULL_FLAGS, c.ref(IMAGE_A)))
        for rep in range(1, self.reps + 1):
            for case, row in (("new", ROW_PUSH_NEW), ("same", ROW_PUSH_SAME)):
                for tool in ("layerfs", "skopeo") if self.push_error is None else ("skopeo",):
                    image = f"pushed-{tool}-{case}:{rep}"
                    self._layerfs_commit(store, mp, f"push-{tool}-{case}-{rep}", image)
                    dest = self._destination(case, tool, rep)
                    if tool == "layerfs":
                        argv = c.layerfs(store, "push", "--tls-verify=false", "-q", image, dest)
                    else:
                        argv = ["skopeo", "copy", "-q", "--dest-tls-verify=false",
                                f"oci:{store}:{self._store_ref(store, image)}", f"docker://{dest}"]
                    drop_caches()
                    seconds, traffic = self._timed_traffic(argv)
                    traffic.top_layer = self.registry.top_layer(dest)
                    self.results.add(row, tool, seconds, traffic)
                    log(f"registry: {row}, {tool}: {seconds:.2f}s; {_push_cell(traffic)}")
        remove_tree(store)

    def _push_podman(self) -> None:
        c = self.c
        root, runroot = c.fresh("podman-push-root"), c.fresh("podman-push", runtime=True)

        def p(*args: str) -> list[str]:
            return c.podman(root, runroot, *args)

        try:
            c.run(p("pull", "-q", "--tls-verify=false", c.ref(IMAGE_A)))
            for rep in range(1, self.reps + 1):
                for case, row in (("new", ROW_PUSH_NEW), ("same", ROW_PUSH_SAME)):
                    name = f"push-podman-{case}-{rep}"
                    image = f"localhost/pushed-podman-{case}:{rep}"
                    c.run(p("create", "--name", name, c.ref(IMAGE_A), "true"))
                    script = (f'm=$({shlex.join(p("mount", name))}) && cp -r {shlex.quote(str(self.change))} '
                              f'"$m/srv/release" && echo {name} > "$m/srv/release/STAMP" && '
                              f'{shlex.join(p("umount", name))}')
                    c.run(p("unshare", "sh", "-c", script))
                    c.run(p("commit", "-q", name, image))
                    c.run(p("rm", name))
                    drop_caches()
                    dest = self._destination(case, "podman", rep)
                    seconds, traffic = self._timed_traffic(p("push", "-q", "--tls-verify=false", image,
                                                             f"docker://{dest}"))
                    traffic.top_layer = self.registry.top_layer(dest)
                    self.results.add(row, "podman", seconds, traffic)
                    log(f"registry: {row}, podman: {seconds:.2f}s; {_push_cell(traffic)}")
        finally:
            c.run(p("unshare", *p("umount", "-a")), check=False)
            remove_tree(root)
            remove_tree(runroot)


def run_registry(paths: CachePaths, layerfs: Path, reps: int) -> RegistryResults:
    return Bench(paths, layerfs, reps).run()


# ---------------------------------------------------------------- the report


def render_registry(results: RegistryResults) -> str:
    tools = TOOLS
    header = ["workload (s)", *(COLUMNS[t] for t in tools), "lfs/podman", "lfs/skopeo"]
    rows: list[list[str]] = []
    layer_digests = {str(layer["digest"]) for layer in results.layers.values()}
    for row in (ROW_PULL, ROW_OPEN, ROW_BROWSE, ROW_SHARED, ROW_PUSH_NEW, ROW_PUSH_SAME):
        if row not in results.seconds:
            continue
        cells = [row]
        for tool in tools:
            value = results.median(row, tool)
            cells.append("-" if value is None else f"{value:.3f}")
        for peer in ("podman", "skopeo"):
            ratio = results.ratio(row, "layerfs", peer)
            cells.append("" if ratio is None else f"{ratio:.2f}x")
        rows.append(cells)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(cells: list[str]) -> str:
        return "  ".join([cells[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))]).rstrip()

    lines = [f"registry: pull, first browse and push against a local docker-registry; median of {results.reps}, "
             "each pull into an empty store, caches dropped before each timed pull or push; rootless as "
             f"{USER} (podman: runc, fuse-overlayfs), lfs (root) = layerfs as root",
             *[f"  {line}" for line in results.header], "", fmt(header), fmt(["-" * w for w in widths]),
             *(fmt(r) for r in rows)]
    traffic_rows = [(ROW_PULL, "downloaded"), (ROW_SHARED, "downloaded"), (ROW_PUSH_NEW, "uploaded"),
                    (ROW_PUSH_SAME, "uploaded")]
    lines += ["", "registry traffic (from the registry's log; last rep; up = blob uploads completed, mounted = "
                  "cross-repository mounts, HEAD hit = blobs found present):"]
    for row, _what in traffic_rows:
        for tool in tools:
            found = results.traffic.get(row, {}).get(tool)
            if not found:
                continue
            t = found[-1]
            cell = _push_cell(t) if "push" in row else (
                f"{_blobs_cell(t, layer_digests)}, {t.manifest_gets} manifest GETs, {t.requests} requests")
            lines.append(f"  {row}, {'skopeo' if tool == 'skopeo' and 'push' in row else COLUMNS[tool]}: {cell}")
    targets = results.targets()
    passed = sum(s == "PASS" for _, _, s in targets)
    failed = sum(s == "FAIL" for _, _, s in targets)
    lines += ["", f"registry targets: {passed} PASS, {failed} FAIL, {len(targets) - passed - failed} n/a"]
    lines += [f"  {status:4}  {what} (got {got})" for what, got, status in targets]
    lines += [f"error: {tool}: {message}" for tool, message in results.errors.items()]
    lines += ["", f"1-min load average: {results.load[0]:.2f} at start, {results.load[1]:.2f} at end", *results.notes,
              "pull to first browse = pull + (mount + ls -la of the root); skopeo(+umoci) = skopeo copy docker:// "
              "oci: + umoci unpack --rootless + ls; podman = podman pull + podman unshare (podman image mount + "
              "ls); push: a container of pull-a with ~50 MB written (cp -r, through its mount), committed; "
              "skopeo pushes a layerfs commit from the layerfs store (oci:STORE:NAME), podman its own commit"]
    return "\n".join(lines)
