"""Everything a container's start needs besides its image: what `run` and `create` were told.

Stored in the container's record when it is created, so that `start` and `restart`
run it the same way again, as docker keeps a container's HostConfig.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from launcher.config import ProcessSpec
from launcher.network import HOST, MODES
from layerfs.errors import BadInput

USERNS_MODES = ("auto", "single")  # subordinate ids when /etc/subuid has some; only one's own
_VOLUME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class VolumeSpec:
    """`-v SOURCE:TARGET[:ro]`: SOURCE an absolute host path or a volume name; "" is an
    anonymous volume (the image's Volumes), made at the first start."""

    source: str
    target: str
    read_only: bool = False

    @property
    def named(self) -> bool:
        return not self.source.startswith("/")


def parse_volume(text: str) -> VolumeSpec:
    parts = text.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise BadInput(f"invalid volume {text!r}: use HOST_DIR:CONTAINER_DIR[:ro] or NAME:CONTAINER_DIR[:ro]")
    source, target = parts[0], parts[1]
    if not target.startswith("/") or target == "/":
        raise BadInput(f"invalid volume {text!r}: the container path must be absolute, and not /")
    if not source.startswith("/") and not _VOLUME_NAME.match(source):
        raise BadInput(f"invalid volume {text!r}: a volume name is letters, digits, '_', '.', '-' "
                       "(a host directory must be an absolute path)")
    return VolumeSpec(source, target, len(parts) == 3 and parts[2] == "ro")


@dataclass(frozen=True)
class RunOptions:
    process: ProcessSpec
    hostname: str = ""
    network: str = HOST
    volumes: tuple[VolumeSpec, ...] = ()
    read_only: bool = False
    tty: bool = False
    interactive: bool = False
    userns: str = "auto"
    no_new_privs: bool = False
    remove: bool = False      # --rm: the container and its anonymous volumes go when it exits
    anonymous: dict[str, str] = field(default_factory=dict)  # target -> volume, once made

    def __post_init__(self) -> None:
        if self.network not in MODES:
            raise BadInput(f"unknown network {self.network!r}: use {' or '.join(MODES)}")
        if self.userns not in USERNS_MODES:
            raise BadInput(f"unknown --userns {self.userns!r}: use {' or '.join(USERNS_MODES)}")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["process"] = self.process.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunOptions":
        data = dict(data)
        data["process"] = ProcessSpec.from_json(data["process"])
        data["volumes"] = tuple(VolumeSpec(**v) for v in data["volumes"])
        return cls(**data)
