"""Which layerfs mounts are live: the kernel's mount table plus a record per mount.

The kernel's mountinfo is the truth about what is mounted; the record in
ROOT/mounts/ adds what the kernel does not know (image, daemon pid, the kind of
mount). A mount made inside a user namespace (`layerfs unshare`, a container)
lives in that namespace's mount table, not the host's: its record names the
mount namespace, and is checked against the daemon's own mount table. A record
whose mount is gone is stale and is dropped when seen. A mount whose daemon died
(SIGKILL, a crash) stays in the table, answering ENOTCONN: its record is kept, as
dead, until `layerfs umount` takes it down (only for this namespace; another
namespace's table cannot be read once its daemon is gone).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import xxhash

from layerfs.store.layout import Store, write_atomic

FSTYPE = "fuse.layerfs"
_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def _mounts() -> list[tuple[str, str, str]]:
    """(mount point, filesystem type, device "major:minor") of each mount of this mount
    namespace, in mount order."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            found.append((_unescape(fields[4]), fields[sep + 1], fields[2]))
    return found


def mount_table() -> dict[str, str]:
    """mount point -> filesystem type, for this mount namespace (last mount wins)."""
    return {point: fstype for point, fstype, _device in _mounts()}


def layerfs_device(mountpoint: str) -> str | None:
    """The device of the layerfs mount on top at `mountpoint`, if that is what is there:
    what a server checks before it unmounts a path that may hold someone else's mount by then."""
    top = {point: (fstype, device) for point, fstype, device in _mounts()}.get(mountpoint)
    return top[1] if top is not None and top[0] == FSTYPE else None


def is_mountpoint(path: Path) -> bool:
    return str(path) in mount_table()


def mount_namespace(pid: int | str = "self") -> str:
    """The mount namespace of a process, as the kernel names it ("mnt:[4026531841]")."""
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return ""


def process_start(pid: int) -> str:
    """When a process started (clock ticks since boot): a pid reused later differs."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return ""


@dataclass
class MountRecord:
    mountpoint: str
    image: str
    id: str
    pid: int
    kind: str = "browse"     # or "runtime" (see access.py)
    namespace: str = ""      # the mount namespace it lives in
    started: str = ""        # the daemon's start time, against pid reuse

    @classmethod
    def of_daemon(cls, mountpoint: str, image: str, record_id: str, pid: int, kind: str) -> "MountRecord":
        return cls(mountpoint, image, record_id, pid, kind, mount_namespace(pid), process_start(pid))

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @property
    def here(self) -> bool:
        """Whether the mount lives in this process's mount namespace."""
        return self.namespace in ("", mount_namespace())

    @property
    def served(self) -> bool:
        """Whether its daemon still runs (a process that took its pid since does not count)."""
        return daemon_alive(self.pid) and (not self.started or self.started == process_start(self.pid))


def _record_path(store: Store, mountpoint: str) -> Path:
    """One record per mount point of this mount namespace (another namespace may use
    the same path for a mount of its own)."""
    key = f"{mount_namespace()}\n{mountpoint}"
    return store.mounts / (xxhash.xxh64_hexdigest(key.encode()) + ".json")


def save_record(store: Store, record: MountRecord) -> None:
    store.mounts.mkdir(parents=True, exist_ok=True)
    write_atomic(_record_path(store, record.mountpoint), json.dumps(record.to_json()).encode(), durable=False)


def drop_record(store: Store, mountpoint: str) -> None:
    _unlink(_record_path(store, mountpoint))


def _unlink(path: Path | str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def daemon_alive(pid: int) -> bool:
    """Whether a daemon still runs (a zombie waiting to be reaped does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in (b"Z", b"X")


def mounted_images(store: Store) -> dict[str, str]:
    """image id -> a mount point using it, for refusing to remove images in use (a dead
    mount uses nothing: its daemon, which read the image, is gone)."""
    return {r.id: r.mountpoint for r in live_mounts(store)}


def _still_mounted(record: MountRecord, table: dict[str, str]) -> bool:
    """Whether the record's mount is still there; one in another namespace is looked up
    in its daemon's mount table, so it counts only while that daemon runs."""
    if record.here:
        return table.get(record.mountpoint) == FSTYPE
    if not record.served:
        return False
    try:
        with open(f"/proc/{record.pid}/mountinfo") as f:
            return any(_unescape(line.split()[4]) == record.mountpoint for line in f)
    except OSError:
        return True  # its table cannot be read, but its daemon serves: keep the record


def known_mounts(store: Store) -> list[MountRecord]:
    """Mounts of this store, in any mount namespace, that are still mounted: served, or
    dead (`served` is False) until unmounted. Records of mounts gone are removed."""
    if not store.mounts.is_dir():
        return []
    table = mount_table()
    known = []
    for entry in sorted(os.scandir(store.mounts), key=lambda e: e.name):
        if not entry.name.endswith(".json"):
            continue
        try:
            record = MountRecord(**json.loads(Path(entry.path).read_text()))
        except (OSError, ValueError, TypeError):
            continue
        if _still_mounted(record, table):
            known.append(record)
        else:
            _unlink(entry.path)
    return known


def live_mounts(store: Store) -> list[MountRecord]:
    """The mounts of this store that are mounted and served: what holds an image or a
    container's layer. A dead mount does not (it only awaits `layerfs umount`), so it
    blocks no rmi, rm, start or commit."""
    return [r for r in known_mounts(store) if r.served]
