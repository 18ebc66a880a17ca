"""Two kinds of mount: who may enter, and who checks permissions.

A *browse* mount is an inspector's view for the user who mounted it on the host:
only that user may enter (no allow_other), and nothing is checked, so that user
reads every file of an image even where the image says 0600 root.

A *runtime* mount serves a container to its processes. The kernel checks every
access from the attributes layerfs serves (`default_permissions`) and from POSIX
ACLs (negotiated with FUSE, so the kernel enforces them as well), which gives
the errors ext4 gives, for objects of every layer alike, with no request to the
daemon for a refused call. Every id of the user namespace that made the mount
may enter (`allow_other`). The kernel grants allow_other without /etc/fuse.conf
to root inside a user namespace, which is how podman runs fuse-overlayfs; there
setuid programs work too (`su` in a container), confined to the namespace's ids.
On the host only root may ask for a runtime mount, and it stays nosuid, nodev:
otherwise every host user could run the image's setuid-root programs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from layerfs.errors import LayerfsError
from layerfs.identity import in_user_namespace
from layerfs.store import layout


@dataclass(frozen=True)
class MountKind:
    runtime: bool
    suid: bool = False

    def fuse_options(self) -> set[str]:
        # atime changes only when set explicitly: updating it on every read would
        # cost a journal record per read (fuse-overlayfs mounts noatime too).
        options = {"noatime"}
        if self.runtime:
            options |= {"default_permissions", "allow_other"}
        if self.suid:
            options.add("suid")
        return options

    @property
    def label(self) -> str:
        return "runtime" if self.runtime else "browse"


BROWSE = MountKind(runtime=False)


def mount_kind(allow_other: bool) -> MountKind:
    """The kind of mount this process makes: runtime for root inside a user namespace
    (that is a container's root) or when root on the host asks for allow_other."""
    if in_user_namespace() and os.geteuid() == 0:
        return MountKind(runtime=True, suid=True)
    if not allow_other:
        return BROWSE
    if layout.acting_for is not None:
        raise LayerfsError(f"--allow-other needs root, and on {layout.acting_for}'s store root acts "
                           f"as {layout.acting_for}: mount from a store of root's, or inside "
                           f"`layerfs unshare` as {layout.acting_for}")
    if os.getuid() != 0:
        raise LayerfsError("--allow-other needs root on the host; as a user, mount inside "
                           "`layerfs unshare`, where every mount is a runtime mount")
    return MountKind(runtime=True)
