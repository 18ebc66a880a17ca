"""What a start binds into the container: host directories, named volumes (made on
first use) and the image's anonymous volumes (made at the first start, one each).

A volume made by this start is seeded, as docker seeds one, with what the
container has at its path: files, owners, modes and links, so that an image's
/var/lib/postgresql or /usr/share/nginx/html is there on a fresh volume. The copy
runs inside the container's user namespace, where every owner is mappable.
"""

from __future__ import annotations

import contextlib
import os
import shutil

from launcher.options import RunOptions, VolumeSpec
from launcher.rootfs import Volume
from layerfs.container.records import Container
from layerfs.container.volumes import Volumes
from layerfs.errors import NotFound
from layerfs.store.layout import Store


def _specs(options: RunOptions) -> list[VolumeSpec]:
    """-v volumes, then the image's (anonymous) ones that no -v covers."""
    given = {spec.target for spec in options.volumes}
    return list(options.volumes) + [VolumeSpec("", target) for target in options.process.volumes
                                    if target not in given]


def bind_volumes(store: Store, container: Container, options: RunOptions,
                 root: str) -> tuple[tuple[Volume, ...], dict[str, str]]:
    """The binds of this start, and the anonymous volumes (target -> name) the
    container has after it, to be remembered when new ones were made."""
    anonymous = dict(options.anonymous)
    binds = []
    for spec in _specs(options):
        if not spec.named:
            if not os.path.isdir(spec.source):
                raise NotFound(f"volume source {spec.source} is not a directory")
            binds.append(Volume(spec.source, spec.target, spec.read_only))
            continue
        name = spec.source or anonymous.get(spec.target)
        volume, made = _get_or_create(store, container, name)
        if not spec.source:
            anonymous[spec.target] = volume.name
        if made:
            _seed(os.path.join(root, spec.target.lstrip("/")), volume.mountpoint)
        binds.append(Volume(volume.mountpoint, spec.target, spec.read_only))
    return tuple(binds), anonymous


def _get_or_create(store: Store, container: Container, name: str | None):  # noqa: ANN202
    volumes = Volumes(store)
    with store.locked():
        if name:
            with contextlib.suppress(NotFound):
                return volumes.get(name), False
        return volumes.create(name, {} if name else {"anonymous": container.id}), True


def _seed(source: str, data: str) -> None:
    """Copy the container's directory at a volume's path into the new volume."""
    if not os.path.isdir(source) or os.path.islink(source):
        return
    shutil.copytree(source, data, symlinks=True, dirs_exist_ok=True)
    for directory, dirs, files in os.walk(source):
        for name in ["", *dirs, *files]:
            origin = os.path.join(directory, name) if name else directory
            copy = os.path.join(data, os.path.relpath(origin, source))
            st = os.lstat(origin)
            os.lchown(copy, st.st_uid, st.st_gid)
            if not os.path.islink(copy):
                os.chmod(copy, st.st_mode & 0o7777)  # chown cleared setuid bits
