"""A small vocabulary of filesystem operations, to run the same steps on two trees.

The container tests replay one list of operations on a layerfs container mount and on
kernel overlayfs over the same layers, then compare what each operation answered and
what the trees look like. So every operation:

- takes paths relative to the mount root, drawn from a small pool of names (plus the
  lower layers' own paths), so that operations collide often: write over a whiteout,
  rename onto a hard link, rmdir of a merged directory...;
- never raises: `apply(root)` returns "ok" or the errno name ("ENOENT", "EXDEV"), which
  is what the two implementations must agree on;
- is plain data (a dataclass) that round-trips through JSON, so hypothesis can shrink
  it and a failure prints a readable list.

The permission suites run each operation as one of several users (a `Step`): root,
and two unprivileged users who share a group, each in a child process with that
user's credentials (`run_steps`, which must run as root), on a runtime mount that
admits them all and on kernel overlayfs alike.

The mount of a rootless user is invisible to root (no allow_other), so the operations
must also run as that user. Like `snapshot_as`, `run_ops_as` runs this file's own
source with `python -c` as the user; that needs nothing but the standard library, so
hypothesis is imported only inside `operations()`. `python -m tests.support.fsops ROOT
< ops.json` prints the results as JSON.

Symlink targets come from the pool too and are always relative without "..": the
operations follow symlinks (open, chmod, truncate, utime do), and an absolute or
escaping target would reach outside the mount.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import struct
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Protocol

# Names the operations use besides the lower layers' own paths: top-level files and
# directories, children of those directories, and one level deeper.
NAME_POOL: tuple[str, ...] = (
    "a", "b", "c", "new", "dir1", "dir1/x", "dir1/y", "dir1/sub", "dir1/sub/z",
    "dir2", "dir2/y", "dir2/x",
)
# Relative, without "..": resolving them can never leave the mount.
SYMLINK_TARGETS: tuple[str, ...] = ("a", "b", "dir1", "dir1/x", "nonexistent", "x")
FILE_MODES: tuple[int, ...] = (0o644, 0o600, 0o755, 0o4755)
DIR_MODES: tuple[int, ...] = (0o755, 0o700, 0o2775)
CHMOD_MODES: tuple[int, ...] = (0o600, 0o644, 0o755, 0o700, 0o4755, 0o1777, 0o000)
IDS: tuple[int, ...] = (0, 1000, 65534)
# Who runs an operation in the permission suites: (uid, gid, supplementary groups). Alice
# and bob share group 2000, so group permissions, setgid directories and chgrp matter.
USERS: dict[str, tuple[int, int, tuple[int, ...]]] = {
    "root": (0, 0, (0,)),
    "alice": (1000, 1000, (1000, 2000)),
    "bob": (1001, 1001, (1001, 2000)),
}
OWNER_IDS: tuple[int, ...] = (-1, 0, 1000, 1001, 2000)  # -1: leave as it is (chgrp, chown)


def acl_xattr(*named: tuple[str, int, int], owner: int = 6, group: int = 4, other: int = 4) -> bytes:
    """A POSIX ACL xattr: owner, group, other permissions plus ("user"|"group", id, perm)
    entries (then with a mask of everything they and the group grant)."""
    undefined = 0xFFFFFFFF
    entries = [(0x01, owner, undefined), (0x04, group, undefined), (0x20, other, undefined)]
    entries += [(0x02 if kind == "user" else 0x08, perm, ident) for kind, ident, perm in named]
    if named:
        mask = group
        for _kind, _ident, perm in named:
            mask |= perm
        entries.append((0x10, mask, undefined))
    entries.sort(key=lambda e: (e[0], e[2]))
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


ACLS: dict[str, bytes] = {
    "bob-rw": acl_xattr(("user", 1001, 6)),
    "alice-r-group2000-rwx": acl_xattr(("user", 1000, 4), ("group", 2000, 7), group=0),
    "minimal-600": acl_xattr(owner=6, group=0, other=0),
    "dir-bob-rwx": acl_xattr(("user", 1001, 7), owner=7, group=5, other=0),
}
# Names the permission suites create besides NAME_POOL: in the sticky, setgid, ACL'd and
# private directories of their stack (tests/test_permission_differential.py).
USER_NAMES: tuple[str, ...] = (
    "tmp/new", "tmp/newdir", "shared/new", "shared/newdir", "acldir/new", "acldir/newdir",
    "home/alice/new", "home/bob/new",
)
XATTR_NAMES: tuple[str, ...] = ("user.x", "user.y")
MTIMES: tuple[int, ...] = (1000000000, 1600000000)
# The umask every run uses, so created modes do not depend on who runs the operations.
UMASK = 0o022


def _errname(e: OSError) -> str:
    return errno.errorcode.get(e.errno, str(e.errno)) if e.errno else type(e).__name__


class Op:
    """Base of the operations: the JSON form and the never-raising `apply`."""

    name: ClassVar[str]

    def run(self, root: Path) -> None:
        raise NotImplementedError

    def apply(self, root: str | os.PathLike) -> str:
        """Run the operation under `root`: "ok", or the errno name of the failure."""
        try:
            self.run(Path(root))
        except OSError as e:
            return _errname(e)
        return "ok"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"op": self.name}
        for key, value in asdict(self).items():  # type: ignore[call-overload]
            data[key] = {"hex": value.hex()} if isinstance(value, bytes) else value
        return data

    def __str__(self) -> str:
        args = ", ".join(_fmt_arg(f.name, getattr(self, f.name))
                         for f in fields(self))  # type: ignore[arg-type]
        return f"{self.name}({args})"


def _fmt_arg(name: str, value: object) -> str:
    if name in ("mode",) and isinstance(value, int):
        return oct(value)
    if isinstance(value, bytes) and len(value) > 24:
        return f"<{len(value)} bytes>"
    return repr(value)


_OPS: dict[str, type[Op]] = {}


def _op(cls: type[Op]) -> type[Op]:
    """Register an operation class under its `name` for `op_from_json`."""
    _OPS[cls.name] = cls
    return cls


def op_from_json(data: dict[str, Any]) -> Op:
    data = dict(data)
    cls = _OPS[data.pop("op")]
    args = {k: bytes.fromhex(v["hex"]) if isinstance(v, dict) else v for k, v in data.items()}
    return cls(**args)


@_op
@dataclass(frozen=True)
class WriteFile(Op):
    """Create the file or truncate it, then write `data` (open O_CREAT|O_TRUNC, as `>`)."""

    name: ClassVar[str] = "write_file"
    path: str
    data: bytes
    mode: int = 0o644

    def run(self, root: Path) -> None:
        fd = os.open(root / self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, self.mode)
        try:
            os.write(fd, self.data)
        finally:
            os.close(fd)


@_op
@dataclass(frozen=True)
class Append(Op):
    """Append to an existing file (no O_CREAT: a pure write to what is there, `>>`)."""

    name: ClassVar[str] = "append"
    path: str
    data: bytes

    def run(self, root: Path) -> None:
        fd = os.open(root / self.path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, self.data)
        finally:
            os.close(fd)


@_op
@dataclass(frozen=True)
class Mkdir(Op):
    name: ClassVar[str] = "mkdir"
    path: str
    mode: int = 0o755

    def run(self, root: Path) -> None:
        os.mkdir(root / self.path, self.mode)


@_op
@dataclass(frozen=True)
class Rmdir(Op):
    name: ClassVar[str] = "rmdir"
    path: str

    def run(self, root: Path) -> None:
        os.rmdir(root / self.path)


@_op
@dataclass(frozen=True)
class Unlink(Op):
    name: ClassVar[str] = "unlink"
    path: str

    def run(self, root: Path) -> None:
        os.unlink(root / self.path)


@_op
@dataclass(frozen=True)
class Rename(Op):
    """rename(2), files and directories alike (replacing `dst` if the rules allow)."""

    name: ClassVar[str] = "rename"
    src: str
    dst: str

    def run(self, root: Path) -> None:
        os.rename(root / self.src, root / self.dst)


@_op
@dataclass(frozen=True)
class Symlink(Op):
    name: ClassVar[str] = "symlink"
    target: str
    path: str

    def run(self, root: Path) -> None:
        os.symlink(self.target, root / self.path)


@_op
@dataclass(frozen=True)
class Link(Op):
    """link(2): a hard link to `src` itself (a symlink is linked, not followed)."""

    name: ClassVar[str] = "link"
    src: str
    dst: str

    def run(self, root: Path) -> None:
        os.link(root / self.src, root / self.dst, follow_symlinks=False)


@_op
@dataclass(frozen=True)
class Chmod(Op):
    """chmod(2), which follows symlinks (Linux has no lchmod)."""

    name: ClassVar[str] = "chmod"
    path: str
    mode: int

    def run(self, root: Path) -> None:
        os.chmod(root / self.path, self.mode)


@_op
@dataclass(frozen=True)
class Chown(Op):
    """lchown(2): owners of symlinks change too, and copy-up must keep them."""

    name: ClassVar[str] = "chown"
    path: str
    uid: int
    gid: int

    def run(self, root: Path) -> None:
        os.chown(root / self.path, self.uid, self.gid, follow_symlinks=False)


@_op
@dataclass(frozen=True)
class Truncate(Op):
    name: ClassVar[str] = "truncate"
    path: str
    size: int

    def run(self, root: Path) -> None:
        os.truncate(root / self.path, self.size)


@_op
@dataclass(frozen=True)
class SetXattr(Op):
    """lsetxattr(2): on a symlink, user.* xattrs fail with EPERM on every filesystem."""

    name: ClassVar[str] = "setxattr"
    path: str
    key: str
    value: bytes

    def run(self, root: Path) -> None:
        os.setxattr(root / self.path, self.key, self.value, follow_symlinks=False)


@_op
@dataclass(frozen=True)
class RemoveXattr(Op):
    name: ClassVar[str] = "removexattr"
    path: str
    key: str

    def run(self, root: Path) -> None:
        os.removexattr(root / self.path, self.key, follow_symlinks=False)


@_op
@dataclass(frozen=True)
class Utime(Op):
    """utimensat(2) setting atime and mtime to `mtime` (follows symlinks)."""

    name: ClassVar[str] = "utime"
    path: str
    mtime: int

    def run(self, root: Path) -> None:
        os.utime(root / self.path, (self.mtime, self.mtime))


_libc = ctypes.CDLL(None, use_errno=True)


@_op
@dataclass(frozen=True)
class Access(Op):
    """access(2) for read, write and/or execute (`mode`: a combination of R_OK=4, W_OK=2,
    X_OK=1), which reports the errno (os.access would only say yes or no)."""

    name: ClassVar[str] = "access"
    path: str
    mode: int

    def run(self, root: Path) -> None:
        if _libc.access(os.fsencode(root / self.path), ctypes.c_int(self.mode)) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))


@_op
@dataclass(frozen=True)
class Read(Op):
    """Open for reading and read everything; O_NOATIME too when `noatime` (owner only)."""

    name: ClassVar[str] = "read"
    path: str
    noatime: bool = False

    def run(self, root: Path) -> None:
        fd = os.open(root / self.path, os.O_RDONLY | (os.O_NOATIME if self.noatime else 0))
        try:
            while os.read(fd, 1 << 16):
                pass
        finally:
            os.close(fd)


@_op
@dataclass(frozen=True)
class ListDir(Op):
    name: ClassVar[str] = "listdir"
    path: str

    def run(self, root: Path) -> None:
        os.listdir(root / self.path)


@_op
@dataclass(frozen=True)
class SetAcl(Op):
    """Set one of ACLS as the access ACL (or, with `default`, the default ACL)."""

    name: ClassVar[str] = "setacl"
    path: str
    acl: str
    default: bool = False

    def run(self, root: Path) -> None:
        key = "system.posix_acl_default" if self.default else "system.posix_acl_access"
        os.setxattr(root / self.path, key, ACLS[self.acl])


@_op
@dataclass(frozen=True)
class Touch(Op):
    """utimensat(2) with UTIME_NOW for both times: the owner, or anyone who may write."""

    name: ClassVar[str] = "touch"
    path: str

    def run(self, root: Path) -> None:
        os.utime(root / self.path, None)


@dataclass(frozen=True)
class Step:
    """One operation, the user (a key of USERS) who runs it, and that user's umask."""

    user: str
    op: Op
    umask: int = UMASK

    def __str__(self) -> str:
        umask = f" (umask {self.umask:03o})" if self.umask != UMASK else ""
        return f"{self.user}{umask}: {self.op}"


def _as_user(step: Step, root: str | os.PathLike) -> str:
    """`step.op.apply(root)` in a child process with the user's credentials (caller is root)."""
    uid, gid, groups = USERS[step.user]
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            os.setgroups(list(groups))
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)  # drops every capability unless uid is 0
            os.umask(step.umask)
            os.write(write_end, step.op.apply(root).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        result = f.read().decode()
    os.waitpid(pid, 0)
    return result or "child failed"


def run_steps(steps: Iterable[Step], root: str | os.PathLike) -> list[str]:
    """Apply each step as its user, in order; one result per step. Must run as root."""
    return [_as_user(step, root) for step in steps]


def run_ops(ops: Iterable[Op], root: str | os.PathLike) -> list[str]:
    """Apply `ops` in order under `root`, with the fixed UMASK; one result per operation."""
    old = os.umask(UMASK)
    try:
        return [op.apply(root) for op in ops]
    finally:
        os.umask(old)


def ops_to_json(ops: Iterable[Op]) -> str:
    return json.dumps([op.to_json() for op in ops])


def ops_from_json(text: str | bytes) -> list[Op]:
    return [op_from_json(item) for item in json.loads(text)]


class _Runs(Protocol):
    def sh(self, argv: list[str], *, input: bytes | None = None
           ) -> subprocess.CompletedProcess[bytes]: ...


def run_ops_command(root: str | os.PathLike) -> list[str]:
    """A command line that reads operations (JSON) on stdin, applies them under `root`
    and prints the results (JSON), runnable by any user: it needs no repository access."""
    with open(__file__, encoding="utf-8") as f:
        source = f.read()
    return [sys.executable, "-c", source, os.fspath(root)]


def run_ops_as(identity: _Runs, ops: Sequence[Op], root: str | os.PathLike) -> list[str]:
    """`run_ops` as the identity behind `identity.sh` (the conftest `Layerfs`), so a
    rootless user's mount, which root cannot enter, can be changed."""
    proc = identity.sh(run_ops_command(root), input=ops_to_json(ops).encode())
    results = json.loads(proc.stdout)
    assert len(results) == len(ops), (ops, results)
    return results


def format_results(ops: Sequence[Op | Step], *columns: tuple[str, Sequence[str]]) -> str:
    """One line per operation with each labelled column of results, differences marked."""
    lines = []
    for i, op in enumerate(ops):
        values = [results[i] for _, results in columns]
        mark = "  " if len(set(values)) == 1 else "!!"
        cells = "  ".join(f"{label}={value}" for (label, _), value in zip(columns, values))
        lines.append(f"{mark} {i:2d} {op}  ->  {cells}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Hypothesis strategy (imported lazily: the `python -c` runner needs no hypothesis)


def _one_op(base_paths: Iterable[str], hidden_paths: Iterable[str], users: bool) -> Any:
    """A strategy for one operation. See `operations`; `users` adds the operations whose
    answer depends on who asks (access, read, listdir, ACLs, touch) and the owner ids the
    two users have."""
    from hypothesis import strategies as st

    existing = sorted({p.strip("/") for p in base_paths if p.strip("/")})
    pool = set(NAME_POOL) | (set(USER_NAMES) if users else set())
    free = sorted((pool | {p.strip("/") for p in hidden_paths}) - set(existing))
    everything = sorted(set(existing) | set(free))
    anything = st.sampled_from(everything)
    present = st.one_of(st.sampled_from(existing), anything) if existing else anything
    fresh = st.one_of(st.sampled_from(free), anything) if free else anything
    data = st.one_of(st.sampled_from([b"", b"new\n", b"\x00" * 5000 + b"tail"]),
                     st.binary(min_size=1, max_size=16))
    small = st.binary(min_size=1, max_size=8)
    values = st.sampled_from([b"", b"1", b"value"])
    ids = st.sampled_from(OWNER_IDS if users else IDS)
    chmod_modes = st.sampled_from(CHMOD_MODES + ((0o2775, 0o2755, 0o660) if users else ()))

    choices = [
        st.builds(WriteFile, st.one_of(present, fresh), data, st.sampled_from(FILE_MODES)),
        st.builds(Append, present, small),
        st.builds(Mkdir, fresh, st.sampled_from(DIR_MODES)),
        st.builds(Rmdir, present),
        st.builds(Unlink, present),
        st.builds(Rename, present, st.one_of(fresh, present)),
        st.builds(Symlink, st.sampled_from(SYMLINK_TARGETS), fresh),
        st.builds(Link, present, fresh),
        st.builds(Chmod, present, chmod_modes),
        st.builds(Chown, present, ids, ids),
        st.builds(Truncate, present, st.sampled_from([0, 3, 10000])),
        st.builds(SetXattr, present, st.sampled_from(XATTR_NAMES), values),
        st.builds(RemoveXattr, present, st.sampled_from(XATTR_NAMES)),
        st.builds(Utime, present, st.sampled_from(MTIMES)),
    ]
    if users:
        choices += [
            st.builds(Access, present, st.sampled_from([4, 2, 1, 6])),
            st.builds(Read, present, st.booleans()),
            st.builds(ListDir, present),
            st.builds(SetAcl, present, st.sampled_from(sorted(ACLS)), st.booleans()),
            st.builds(Touch, present),
        ]
    return st.one_of(*choices)


def operations(base_paths: Iterable[str], *, hidden_paths: Iterable[str] = (),
               max_ops: int = 15) -> Any:
    """A hypothesis strategy for lists of operations.

    `base_paths` are the paths the lower layers show (relative, e.g. "etc/hosts"),
    `hidden_paths` those that some layer holds but an upper layer deletes (whited out,
    or under an opaque directory): creating one of those must not bring the old
    object back. An operation on an existing object (write, chmod, unlink, rename's
    source...) picks a lower path half the time, so most of them copy up or white
    out; a creation (mkdir, symlink, link's and rename's destination...) picks a name
    that is free or hidden half the time. Otherwise both pick from everything, so
    that operations also collide with each other and fail in the interesting ways
    (EEXIST, ENOTEMPTY, EISDIR)."""
    from hypothesis import strategies as st

    return st.lists(_one_op(base_paths, hidden_paths, users=False), min_size=1, max_size=max_ops)


def steps(base_paths: Iterable[str], *, hidden_paths: Iterable[str] = (), max_steps: int = 15) -> Any:
    """A hypothesis strategy for lists of `Step`s: operations as in `operations`, plus
    the permission-dependent ones, each run by root, alice or bob."""
    from hypothesis import strategies as st

    step = st.builds(Step, st.sampled_from(sorted(USERS)), _one_op(base_paths, hidden_paths, users=True))
    return st.lists(step, min_size=1, max_size=max_steps)


def hidden_paths(layer_trees: Iterable[Iterable[str]], merged: Iterable[str]) -> list[str]:
    """Paths some single layer holds that the merged tree does not show (relative)."""
    shown = set(merged)
    return sorted({p.lstrip("/") for tree in layer_trees for p in tree
                   if p != "/" and p not in shown})


def _main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: fsops ROOT < ops.json\n")
        return 2
    ops = ops_from_json(sys.stdin.read())
    sys.stdout.write(json.dumps(run_ops(ops, argv[1])) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
