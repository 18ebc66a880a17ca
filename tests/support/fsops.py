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

import errno
import json
import os
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


def format_results(ops: Sequence[Op], *columns: tuple[str, Sequence[str]]) -> str:
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

    existing = sorted({p.strip("/") for p in base_paths if p.strip("/")})
    free = sorted((set(NAME_POOL) | {p.strip("/") for p in hidden_paths}) - set(existing))
    everything = sorted(set(existing) | set(free))
    anything = st.sampled_from(everything)
    present = st.one_of(st.sampled_from(existing), anything) if existing else anything
    fresh = st.one_of(st.sampled_from(free), anything) if free else anything
    data = st.one_of(st.sampled_from([b"", b"new\n", b"\x00" * 5000 + b"tail"]),
                     st.binary(min_size=1, max_size=16))
    small = st.binary(min_size=1, max_size=8)
    values = st.sampled_from([b"", b"1", b"value"])

    one_op = st.one_of(
        st.builds(WriteFile, st.one_of(present, fresh), data, st.sampled_from(FILE_MODES)),
        st.builds(Append, present, small),
        st.builds(Mkdir, fresh, st.sampled_from(DIR_MODES)),
        st.builds(Rmdir, present),
        st.builds(Unlink, present),
        st.builds(Rename, present, st.one_of(fresh, present)),
        st.builds(Symlink, st.sampled_from(SYMLINK_TARGETS), fresh),
        st.builds(Link, present, fresh),
        st.builds(Chmod, present, st.sampled_from(CHMOD_MODES)),
        st.builds(Chown, present, st.sampled_from(IDS), st.sampled_from(IDS)),
        st.builds(Truncate, present, st.sampled_from([0, 3, 10000])),
        st.builds(SetXattr, present, st.sampled_from(XATTR_NAMES), values),
        st.builds(RemoveXattr, present, st.sampled_from(XATTR_NAMES)),
        st.builds(Utime, present, st.sampled_from(MTIMES)),
    )
    return st.lists(one_op, min_size=1, max_size=max_ops)


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
