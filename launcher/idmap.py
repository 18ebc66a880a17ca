"""Id maps of a rootless user namespace: the user as root, and its subordinate ids.

The layout is podman's: inside id 0 is the user itself, and 1, 2, ... are the
user's subordinate ids from /etc/subuid and /etc/subgid, so an image file owned by
uid 33 is owned by 33 inside and by a subordinate id on the host. Without a
subordinate range only the user's own id can be mapped (as 0): every other owner
then shows as the overflow id (65534, nobody), and the kernel refuses to write
to what such ids own. That is said plainly rather than done silently, the
common complaint about runtimes that fall back without a word.
"""

from __future__ import annotations

import pwd
import shutil
import subprocess
from dataclasses import dataclass

from layerfs.errors import LayerfsError

SUBUID, SUBGID = "/etc/subuid", "/etc/subgid"
OVERFLOW_ID = 65534


@dataclass(frozen=True)
class Extent:
    """`count` ids from `outside` (host) appear from `inside` on, in the namespace."""

    inside: int
    outside: int
    count: int


@dataclass(frozen=True)
class IdMap:
    uids: tuple[Extent, ...]
    gids: tuple[Extent, ...]

    @property
    def single(self) -> bool:
        """Only the user's own ids are mapped (no subordinate ranges)."""
        return len(self.uids) == 1 and len(self.gids) == 1

    @property
    def size(self) -> int:
        return sum(extent.count for extent in self.uids)


def subordinate_ranges(path: str, user: str, uid: int) -> list[tuple[int, int]]:
    """(start, count) of every range /etc/subuid (or subgid) gives the user, by name or id."""
    ranges = []
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[0] in (user, str(uid)) and fields[1].isdigit() and fields[2].isdigit():
            ranges.append((int(fields[1]), int(fields[2])))
    return ranges


def _extents(own: int, ranges: list[tuple[int, int]]) -> tuple[Extent, ...]:
    extents = [Extent(0, own, 1)]
    inside = 1
    for start, count in ranges:
        extents.append(Extent(inside, start, count))
        inside += count
    return tuple(extents)


def user_map(uid: int, gid: int, single: bool = False) -> IdMap:
    """The map for user `uid` (primary group `gid`): its subordinate ranges, unless
    `single` or the user lacks a range in either file."""
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    uids, gids = subordinate_ranges(SUBUID, user, uid), subordinate_ranges(SUBGID, user, uid)
    if single or not (uids and gids):  # half a map would leave files of every group unmapped
        return IdMap(_extents(uid, []), _extents(gid, []))
    return IdMap(_extents(uid, uids), _extents(gid, gids))


def _map_line(extents: tuple[Extent, ...]) -> list[str]:
    return [str(n) for e in extents for n in (e.inside, e.outside, e.count)]


def write_maps(pid: int, idmap: IdMap) -> None:
    """Give the user namespace of `pid` its id maps.

    A single id needs no help (a process may map its own ids, with setgroups
    denied); ranges need the setuid helpers newuidmap and newgidmap, which check
    /etc/subuid and /etc/subgid."""
    if idmap.single:
        with open(f"/proc/{pid}/setgroups", "w") as f:
            f.write("deny")
        for name, extents in (("uid_map", idmap.uids), ("gid_map", idmap.gids)):
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(" ".join(_map_line(extents)) + "\n")
        return
    for helper, extents in (("newuidmap", idmap.uids), ("newgidmap", idmap.gids)):
        if shutil.which(helper) is None:
            raise LayerfsError(f"{helper} is missing: install the uidmap package "
                               "(or use --single-id to map only your own id)")
        done = subprocess.run([helper, str(pid), *_map_line(extents)], capture_output=True, text=True)
        if done.returncode != 0:
            said = done.stderr.strip().splitlines()
            raise LayerfsError(f"{helper} failed: {said[-1] if said else 'no reason given'} "
                               f"(check {SUBUID} and {SUBGID})")
