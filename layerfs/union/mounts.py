"""Which layerfs mounts are live: the kernel's mount table plus a record per mount.

The kernel's mountinfo is the truth about what is mounted; the record in
ROOT/mounts/ adds what the kernel does not know (image, daemon pid). A record
whose mount or daemon is gone is stale and is dropped when seen.
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


def mount_table() -> dict[str, str]:
    """mount point -> filesystem type, for this mount namespace (last mount wins)."""
    table: dict[str, str] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            table[_unescape(fields[4])] = fields[sep + 1]
    return table


def is_mountpoint(path: Path) -> bool:
    return str(path) in mount_table()


@dataclass
class MountRecord:
    mountpoint: str
    image: str
    id: str
    pid: int

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _record_path(store: Store, mountpoint: str) -> Path:
    return store.mounts / (xxhash.xxh64_hexdigest(mountpoint.encode()) + ".json")


def save_record(store: Store, record: MountRecord) -> None:
    store.mounts.mkdir(parents=True, exist_ok=True)
    write_atomic(_record_path(store, record.mountpoint), json.dumps(record.to_json()).encode())


def drop_record(store: Store, mountpoint: str) -> None:
    try:
        os.unlink(_record_path(store, mountpoint))
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
    """image id -> a mount point using it, for refusing to remove images in use."""
    return {r.id: r.mountpoint for r in live_mounts(store)}


def live_mounts(store: Store) -> list[MountRecord]:
    """Mounts of this store that are still mounted and served; stale records are removed."""
    if not store.mounts.is_dir():
        return []
    table = mount_table()
    live = []
    for entry in sorted(os.scandir(store.mounts), key=lambda e: e.name):
        if not entry.name.endswith(".json"):
            continue
        try:
            record = MountRecord(**json.loads(Path(entry.path).read_text()))
        except (OSError, ValueError, TypeError):
            continue
        if table.get(record.mountpoint) == FSTYPE and daemon_alive(record.pid):
            live.append(record)
        else:
            drop_record(store, record.mountpoint)
    return live
