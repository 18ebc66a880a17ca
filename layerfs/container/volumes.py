"""Named data volumes: directories kept outside every container, so they outlive them.

A volume is ROOT/volumes/<name>/ with `volume.json` (its record) and `_data/`
(what a container will see at its mount target). Containers only ever refer to a
volume by name; removing a container never touches a volume.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from layerfs.container.naming import check_name, new_id
from layerfs.errors import BadInput, NotFound
from layerfs.store.layout import Store, write_atomic
from layerfs.timestamps import now_rfc3339

RECORD = "volume.json"
DATA = "_data"


@dataclass
class Volume:
    name: str
    created: str
    mountpoint: str     # the host directory holding the data
    labels: dict[str, str]

    def to_json(self) -> dict[str, object]:
        """What `volume inspect` prints: the record, plus the driver as docker shows it."""
        return dict(asdict(self), driver="local")


class Volumes:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.root = store.root / "volumes"

    def all(self) -> list[Volume]:
        if not self.root.is_dir():
            return []
        found = []
        for entry in sorted(os.scandir(self.root), key=lambda e: e.name):
            try:
                found.append(Volume(**json.loads(Path(entry.path, RECORD).read_text())))
            except (OSError, ValueError, TypeError):
                continue
        return found

    def get(self, name: str) -> Volume:
        for volume in self.all():
            if volume.name == name:
                return volume
        raise NotFound(f"no volume {name!r} (see `layerfs volume ls`)")

    def create(self, name: str | None, labels: dict[str, str]) -> Volume:
        """Create a volume (callers hold store.locked()); creating an existing one is an error."""
        name = check_name(name, "volume") if name else new_id()
        target = self.root / name
        if target.exists():
            raise BadInput(f"volume {name!r} already exists")
        created = now_rfc3339()
        volume = Volume(name, created, str(target / DATA), labels)
        building = Path(self.store.tmp) / f"volume-{new_id()[:16]}"
        (building / DATA).mkdir(parents=True)
        write_atomic(building / RECORD, json.dumps(asdict(volume), indent=2).encode())
        self.root.mkdir(exist_ok=True)
        os.rename(building, target)
        return volume

    def remove(self, volume: Volume) -> None:
        self.store.discard(self.root / volume.name)
