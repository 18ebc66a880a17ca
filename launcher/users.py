"""Who a container's process runs as: a USER[:GROUP] spec read against the image's files.

`docker run -u postgres` means the image's postgres, not the host's: the name, its
primary group, its supplementary groups and its home come from the rootfs's own
/etc/passwd and /etc/group. Docker and podman resolve a spec with runc's
libcontainer/user.GetExecUser (now moby/sys/user), and images are written against
its rules, so they are followed here, on the files' text, before the process
drops to the ids:

- "" is uid 0: its passwd entry if there is one, else uid 0, gid 0.
- A name must have a passwd entry; a number needs none (then gid 0, home "/").
  With an entry, the first one matching wins, and gives the gid and home.
- GROUP, by name, must be in /etc/group; a number needs no entry. It replaces
  the primary gid, and then no supplementary groups are taken from the files.
- Without GROUP, a user found in passwd gets every group listing it as a member.

The primary gid comes first in `groups`, as docker builds the process's
additional gids. Blank lines and lines starting with # are skipped in both files
(glibc does; runc skips them in /etc/group only), and a numeric field that does
not read as a number counts as 0, as runc reads it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from layerfs.errors import BadInput, LayerfsError

MAX_ID = 2**32 - 2        # uid_t is 32 bits and (uid_t)-1 means "no change" to the kernel
_GO_INT = re.compile(r"[+-]?[0-9]+")   # what Go's strconv.Atoi reads as a number


@dataclass(frozen=True)
class ExecUser:
    """The ids a container's process takes, and the home its HOME defaults to."""

    uid: int
    gid: int
    groups: tuple[int, ...]   # for setgroups(2): the primary gid first
    home: str


@dataclass(frozen=True)
class _Passwd:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class _Group:
    name: str
    gid: int
    members: tuple[str, ...]


def resolve_user(spec: str, passwd: str | None, group: str | None) -> ExecUser:
    """The ids and home for `spec`, given the text of the rootfs's /etc/passwd and
    /etc/group (None when the file is missing)."""
    user_arg, group_arg = (spec.split(":") + ["", ""])[:2]
    uid_arg = _number(user_arg)
    users = _passwd_entries(passwd)
    if user_arg == "":
        match = next((u for u in users if u.uid == 0), None)
    elif uid_arg is not None:
        match = next((u for u in users if u.uid == uid_arg), None)
    else:
        match = next((u for u in users if u.name == user_arg), None)
    if match is not None:
        name, uid, gid, home = match.name, match.uid, match.gid, match.home or "/"
    elif uid_arg is None and user_arg:
        missing = " (the image has no /etc/passwd)" if passwd is None else ""
        raise LayerfsError(f"unable to find user {user_arg}: no matching entries in passwd file"
                           + missing)
    else:   # "" without a uid-0 entry, or a uid without one
        name, uid, gid, home = "", uid_arg or 0, 0, "/"
    groups = _group_entries(group)
    supplementary: list[int] = []
    if group_arg:
        gid_arg = _number(group_arg)
        found = next((g for g in groups
                      if (g.gid == gid_arg if gid_arg is not None else g.name == group_arg)), None)
        if found is not None:
            gid = found.gid
        elif gid_arg is not None:
            gid = gid_arg
        else:
            missing = " (the image has no /etc/group)" if group is None else ""
            raise LayerfsError(f"unable to find group {group_arg}: no matching entries in "
                               "group file" + missing)
    elif name:
        supplementary = [g.gid for g in groups if name in g.members]
    for kind, value in [("uid", uid), ("gid", gid)] + [("gid", g) for g in supplementary]:
        if not 0 <= value <= MAX_ID:
            raise BadInput(f"{kind} {value} for user {spec!r} is out of range: ids go from 0 "
                           f"to {MAX_ID}")
    return ExecUser(uid, gid, tuple(dict.fromkeys([gid, *supplementary])), home)


def _number(text: str) -> int | None:
    return int(text) if _GO_INT.fullmatch(text) else None


def _atoi(text: str) -> int:
    number = _number(text)
    return 0 if number is None else number


def _lines(text: str | None, fields: int) -> list[list[str]]:
    rows = []
    for line in (text or "").split("\n"):
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append((line.split(":") + [""] * fields)[:fields])
    return rows


def _passwd_entries(text: str | None) -> list[_Passwd]:
    # name:password:uid:gid:gecos:home:shell
    return [_Passwd(name, _atoi(uid), _atoi(gid), home)
            for name, _, uid, gid, _, home in _lines(text, 6)]


def _group_entries(text: str | None) -> list[_Group]:
    # name:password:gid:member,member,...
    return [_Group(name, _atoi(gid), tuple(members.split(",")) if members else ())
            for name, _, gid, members in _lines(text, 4)]
