"""Container records: which image a container was made from, its name, its layer.

A container lives in ROOT/containers/<id>/: `container.json` (this record) and
`upper/`, the directory its writable layer will hold. A container is created by
renaming a complete directory from tmp/ into place, so a crash never leaves half a
container, and removed by renaming it out before deleting it.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from layerfs.container.naming import check_name, new_id
from layerfs.errors import BadInput, NotFound
from layerfs.store.layout import Store, write_atomic
from layerfs.timestamps import now_rfc3339
from layerfs.union.upper import RESERVE

WRITER_LOCK = "writer.lock"
RECORD = "container.json"
MOUNT_POINTS = "mountpoints.json"
UPPER = "upper"


@dataclass
class Container:
    id: str
    name: str
    image: str          # the image id (config digest) it was created from
    image_digest: str   # the manifest digest, which pins the exact layers
    image_ref: str      # what the user typed, for display
    created: str
    run: dict[str, Any] | None = None  # how to start it (the launcher's RunOptions, as JSON)

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Containers:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.root = store.root / "containers"

    def path(self, container: Container) -> Path:
        return self.root / container.id

    def upper(self, container: Container) -> Path:
        return self.path(container) / UPPER

    def all(self) -> list[Container]:
        """Every container, newest first (as `ps` lists them)."""
        if not self.root.is_dir():
            return []
        found = []
        for entry in os.scandir(self.root):
            try:
                found.append(Container(**json.loads(Path(entry.path, RECORD).read_text())))
            except (OSError, ValueError, TypeError):
                continue  # not a container directory (or one being removed)
        return sorted(found, key=lambda c: c.created, reverse=True)

    def using_image(self, image_id: str) -> list[Container]:
        return [c for c in self.all() if c.image == image_id]

    def resolve(self, text: str) -> Container:
        """A container by name, full id or unique id prefix."""
        containers = self.all()
        for container in containers:
            if text in (container.name, container.id):
                return container
        matches = [c for c in containers if len(text) >= 1 and c.id.startswith(text.lower())]
        if len(matches) > 1:
            raise BadInput(f"container id prefix {text!r} is ambiguous: give more digits")
        if not matches:
            raise NotFound(f"no container {text!r} (see `layerfs ps -a`)")
        return matches[0]

    def create(self, image_id: str, image_digest: str, image_ref: str, name: str | None,
               run: dict[str, Any] | None = None, durable: bool = True) -> Container:
        """Record a new container (callers hold store.locked()); `durable=False` for one
        that does not outlive its run (`run --rm`): its record is not flushed to disk."""
        container_id = new_id()
        if name is None:
            base = image_ref.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]
            name = f"{base}-{container_id[:6]}"
        check_name(name, "container")
        if any(c.name == name for c in self.all()):
            raise BadInput(f"the name {name!r} is already used by another container")
        created = now_rfc3339(precise=True)  # `ps` orders containers made within one second
        container = Container(container_id, name, image_id, image_digest, image_ref, created, run)
        building = Path(self.store.tmp) / f"container-{container_id}"
        (building / UPPER).mkdir(parents=True)
        write_atomic(building / RECORD, json.dumps(container.to_json(), indent=2).encode(), durable=durable)
        (building / WRITER_LOCK).touch(0o600)  # flocked by its one writer (container/mounting.py)
        self.root.mkdir(exist_ok=True)
        os.rename(building, self.path(container))
        return container

    def set_run(self, container: Container, run: dict[str, Any]) -> None:
        """Keep what a start learnt (the anonymous volumes it made) for the next one."""
        container.run = run
        write_atomic(self.path(container) / RECORD, json.dumps(container.to_json(), indent=2).encode())

    def mount_points(self, container: Container) -> set[bytes]:
        """The paths the launcher made in the layer only to mount on (see launcher/rootfs.py):
        diff and commit leave them out while they are still empty."""
        try:
            return {os.fsencode(p) for p in json.loads((self.path(container) / MOUNT_POINTS).read_text())}
        except (OSError, ValueError):
            return set()

    def add_mount_points(self, container: Container, paths: list[str]) -> None:
        if paths:
            known = {os.fsdecode(p) for p in self.mount_points(container)}
            # not flushed to disk: a record lost to a crash shows the empty mount points in
            # diff, nothing worse, and a first start is the worse for every fsync
            write_atomic(self.path(container) / MOUNT_POINTS,
                         json.dumps(sorted(known | {"/" + p.lstrip("/") for p in paths})).encode(), durable=False)

    def exists(self, container: Container) -> bool:
        return self.path(container).is_dir()

    def remove(self, container: Container) -> None:
        """Delete a container and its writable layer (callers hold store.locked())."""
        self.store.discard(self.path(container))

    def set_aside(self, container: Container) -> Path:
        """Unlist a container at once and leave its deletion for later: what to delete."""
        return self.store.set_aside(self.path(container))

    def layer_size(self, container: Container) -> int:
        """Bytes held by the writable layer (not counting its reserve for deletes)."""
        total = 0
        reserve = str(self.upper(container) / RESERVE)
        for dirpath, _dirnames, filenames in os.walk(self.upper(container)):
            for path in (os.path.join(dirpath, name) for name in filenames):
                if path != reserve:
                    with contextlib.suppress(FileNotFoundError):  # deleted by a running container
                        total += os.lstat(path).st_blocks * 512
        return total
