"""The container's root filesystem, set up by pid 1 in its own mount namespace.

The container's layerfs runtime mount is the root. Around it come what every
container gets, in the order crun makes them: a fresh /proc of the new pid
namespace, a minimal /dev (a tmpfs with the host's harmless devices bound in,
since mknod is impossible rootless, a devpts of its own, shm), a read-only
/sys, volumes, then the runtime's /etc/hostname, /etc/hosts and /etc/resolv.conf
bound over the image's; then pivot_root, and a read-only remount of the root
when asked. Everything happens in pid 1's mount namespace, so the FUSE server
(in the namespace around it) keeps its own view and nothing leaks to the host.

Mount points the image lacks (/proc in a busybox image, say) are made in the
container's layer before this runs (see `MOUNT_POINTS`); diff and commit leave
them out while they are still empty.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from launcher import syscalls
from launcher.paths import resolve_in
from launcher.syscalls import MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, MS_REMOUNT

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
# Directories and files every container mounts something on: made (empty) in the
# container's layer when the image lacks them, and left out of diff and commit.
MOUNT_POINTS: tuple[tuple[str, str], ...] = (
    ("proc", "d"), ("sys", "d"), ("dev", "d"),
    ("etc/hostname", "f"), ("etc/hosts", "f"), ("etc/resolv.conf", "f"),
)


@dataclass(frozen=True)
class Volume:
    """A host directory (or a named volume's data) at `target` inside."""

    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class RootfsPlan:
    rootfs: str               # the layerfs runtime mount of the container
    etc_files: str            # where hostname, hosts and resolv.conf for it are
    volumes: tuple[Volume, ...]
    read_only: bool
    own_network: bool         # a network namespace of its own: sysfs can be mounted fresh


# statvfs flags -> mount flags, for remounting with what a mount already has
_KEPT_FLAGS = ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
               (os.ST_NOATIME, syscalls.MS_NOATIME), (os.ST_NODIRATIME, syscalls.MS_NODIRATIME),
               (os.ST_RELATIME, syscalls.MS_RELATIME))


def remount_read_only(target: str) -> None:
    """Make a mount read-only, keeping its other flags: in a user namespace the flags a
    mount came with (nosuid, nodev, ...) are locked, and a remount that drops one fails."""
    found = os.statvfs(target).f_flag
    flags = sum(flag for st_flag, flag in _KEPT_FLAGS if found & st_flag)
    syscalls.mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)


def _mounts_below(target: str) -> list[str]:
    """`target` and every mount below it, from this namespace's mount table."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == target or point.startswith(target.rstrip("/") + "/"):
                found.append(point)
    return found


def _bind(source: str, target: str, flags: int = 0, read_only: bool = False) -> None:
    syscalls.mount(source, target, None, MS_BIND | MS_REC | flags)
    if read_only:  # the flags of a bind are its own, each submount's too: remount them all
        for point in _mounts_below(target):
            with contextlib.suppress(OSError):  # one that will not (nsfs, say) stays as it is
                remount_read_only(point)
        remount_read_only(target)


# What runc masks and makes read-only in a fresh /proc: real root inside could
# otherwise reboot the host (sysrq-trigger), set its core_pattern, read its memory.
_PROC_READ_ONLY = ("bus", "fs", "irq", "sys", "sysrq-trigger")
_PROC_MASKED = ("acpi", "asound", "interrupts", "kcore", "keys", "latency_stats", "sched_debug", "scsi",
                "timer_list", "timer_stats")


def _mask_proc(proc: str) -> None:
    for name in _PROC_READ_ONLY:
        path = os.path.join(proc, name)
        if os.path.exists(path):
            _bind(path, path, read_only=True)
    for name in _PROC_MASKED:
        path = os.path.join(proc, name)
        if os.path.isdir(path):
            syscalls.mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0")
        elif os.path.exists(path):
            syscalls.mount("/dev/null", path, None, MS_BIND)


def _mount_dev(root: str) -> None:
    dev = resolve_in(root, "/dev")
    # nodev: the devices are the bind mounts below; a node made with mknod opens nothing
    syscalls.mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC | MS_NODEV, "mode=755,size=65536k")
    for name in DEVICES:
        target = os.path.join(dev, name)
        Path(target).touch()
        with contextlib.suppress(OSError):  # a host without one (tty in CI) goes without
            _bind(f"/dev/{name}", target, MS_NOSUID | MS_NOEXEC)
    os.mkdir(os.path.join(dev, "pts"))
    syscalls.mount("devpts", os.path.join(dev, "pts"), "devpts", MS_NOSUID | MS_NOEXEC,
                   "newinstance,ptmxmode=0666,mode=0620")
    os.symlink("pts/ptmx", os.path.join(dev, "ptmx"))
    os.mkdir(os.path.join(dev, "shm"))
    syscalls.mount("shm", os.path.join(dev, "shm"), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                   "mode=1777,size=65536k")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
                         ("core", "/proc/kcore")):
        os.symlink(target, os.path.join(dev, name))


def _mount_proc(root: str) -> str | None:
    """A procfs of the container's pid namespace; where the outer /proc is masked (nested
    in another container) that is refused, and the host's is bound instead: said so."""
    target = resolve_in(root, "/proc")
    try:
        syscalls.mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError as e:
        _bind("/proc", target, MS_NOSUID | MS_NODEV | MS_NOEXEC)
        note = f"a fresh /proc was refused ({e.strerror}): the host's /proc is bound instead"
    else:
        note = None
    _mask_proc(target)
    return note


def _mount_sys(root: str, own_network: bool) -> None:
    target = resolve_in(root, "/sys")
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY
    if own_network:
        with contextlib.suppress(OSError):
            syscalls.mount("sysfs", target, "sysfs", flags)
            return
    _bind("/sys", target, MS_NOSUID | MS_NODEV | MS_NOEXEC, read_only=True)


def set_up(plan: RootfsPlan) -> list[str]:
    """Mount everything and pivot into the root; returns notes worth telling the user."""
    root = plan.rootfs
    syscalls.mount(None, "/", None, MS_REC | MS_PRIVATE)
    notes = [note] if (note := _mount_proc(root)) else []
    _mount_dev(root)
    _mount_sys(root, plan.own_network)
    for volume in plan.volumes:
        _bind(volume.source, resolve_in(root, volume.target), read_only=volume.read_only)
    for name in ("hostname", "hosts", "resolv.conf"):  # over a volume at /etc too, as docker
        target = resolve_in(root, f"/etc/{name}")
        if os.path.exists(target):
            _bind(os.path.join(plan.etc_files, name), target, MS_NOSUID | MS_NODEV)
    os.chdir(root)
    # pivot_root(".", "."): the old root stacks under the new one and is detached at
    # once, with no directory left behind for it (crun does the same)
    syscalls.pivot_root(".", ".")
    syscalls.umount(".", syscalls.MNT_DETACH)
    os.chdir("/")
    if plan.read_only:
        remount_read_only("/")
    return notes
