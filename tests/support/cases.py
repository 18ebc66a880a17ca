"""Synthetic layer stacks, one per OCI layer rule or awkward input, shared by the oracle
self-check (against kernel overlayfs) and the layerfs mount tests (against the oracle).

Each case is a list of layer blobs, base first. Keep a case small and about one thing,
so a failure names the rule that broke.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .oci import (blockdev, chardev, directory, fifo, file, hardlink, make_layer, opaque, symlink,
                  whiteout)

# Valid security.capability value (VFS_CAP_REVISION_2, effective): cap_net_raw permitted.
CAP_NET_RAW = bytes.fromhex("01000002" "00200000" "00000000" "00000000" "00000000")
NON_UTF8 = os.fsdecode(b"caf\xe9-\xff\xfe")  # latin-1 bytes: not valid UTF-8


def _tree_base() -> list:
    """A lower layer with one of everything, for the replacing/deleting cases."""
    return [
        directory("d"), file("d/f1", b"one\n"), directory("d/sub"), file("d/sub/f2", b"two\n"),
        file("f", b"file\n"), symlink("s", "f"), directory("keep"), file("keep/x", b"x\n"),
    ]


def basic() -> list[bytes]:
    return [make_layer([
        directory("etc"), file("etc/hosts", b"127.0.0.1 localhost\n"), file("empty"),
        directory("a"), directory("a/b"), directory("a/b/c"), file("a/b/c/deep", b"deep\n"),
        file("big", bytes(range(256)) * 1200, mode=0o600), symlink("link", "etc/hosts"),
    ])]


def dot_slash_names() -> list[bytes]:
    """"./"-prefixed names as `tar -C dir .` writes them, including the root entry itself."""
    return [
        make_layer([directory("./", mode=0o755), directory("./bin"), file("./bin/tool", b"t",
                    mode=0o755), symlink("./bin/alias", "tool")]),
        make_layer([directory("./", mode=0o750, uid=0, gid=0, xattrs={"user.root": b"r"}),
                    file("./bin/tool", b"tool v2", mode=0o755)]),
    ]


def whiteouts() -> list[bytes]:
    return [
        make_layer(_tree_base() + [directory("sub"), file("sub/x", b"sub x\n"), file("x", b"x\n")]),
        make_layer([
            whiteout("f"), whiteout("d"), whiteout("s"),
            whiteout("x"),  # at the root: must not hide sub/x
            whiteout("keep/nonexistent"),  # a whiteout of nothing is harmless
        ]),
    ]


def whiteout_then_recreate() -> list[bytes]:
    """Deleted in one layer, created again in the next: nothing old may show through."""
    return [
        make_layer(_tree_base()),
        make_layer([whiteout("d"), whiteout("f")]),
        make_layer([directory("d", mode=0o700), file("d/new", b"new\n"),
                    symlink("f", "d/new")]),
    ]


def whiteout_and_entry_same_layer() -> list[bytes]:
    """A whiteout hides lower layers only, never an entry of its own layer."""
    return [
        make_layer(_tree_base()),
        make_layer([
            file("f", b"replaced\n"), whiteout("f"),  # entry before its whiteout
            whiteout("d"), directory("d", mode=0o711), file("d/only", b"only\n"),  # d: opaque
            whiteout("keep/x"), file("keep/x", b"new x\n"),
        ]),
    ]


def opaque_marker_first() -> list[bytes]:
    return [
        make_layer(_tree_base()),
        make_layer([directory("d"), opaque("d"), file("d/new", b"new\n")]),
    ]


def opaque_marker_last() -> list[bytes]:
    """The marker applies first wherever it stands: d/new, listed before it, stays."""
    return [
        make_layer(_tree_base()),
        make_layer([directory("d", mode=0o750), file("d/new", b"new\n"), directory("d/sub"),
                    file("d/sub/n2", b"n2\n"), opaque("d")]),
    ]


def opaque_without_dir_entry() -> list[bytes]:
    """An opaque marker alone keeps the directory (and its attributes), empties it."""
    return [
        make_layer(_tree_base() + [directory("o", mode=0o700, uid=1000, gid=1000,
                                             xattrs={"user.o": b"lower"}), file("o/a")]),
        make_layer([opaque("o"), opaque("keep")]),
        make_layer([directory("keep"), file("keep/again", b"again\n")]),
    ]


def dir_over_dir_attrs() -> list[bytes]:
    """A directory over a directory merges children and takes the new attributes,
    xattrs included (the lower ones are dropped, not merged)."""
    return [
        make_layer([directory("d", mode=0o755, xattrs={"user.a": b"lower"}),
                    file("d/lower", b"lower\n"), directory("t", mode=0o1777)]),
        make_layer([directory("d", mode=0o2750, uid=1000, gid=1000, xattrs={"user.b": b"upper"}),
                    file("d/upper", b"upper\n"), directory("t", mode=0o755, uid=1000)]),
    ]


def type_replacement() -> list[bytes]:
    """File over directory, directory over file, symlink over directory, and back."""
    return [
        make_layer(_tree_base() + [directory("dirlink"), file("dirlink/inner")]),
        make_layer([file("d", b"now a file\n"), directory("f"), file("f/child", b"c\n"),
                    symlink("dirlink", "keep")]),
        make_layer([directory("d", mode=0o700), file("d/fresh", b"fresh\n")]),
    ]


def hardlinks() -> list[bytes]:
    return [make_layer([
        file("a", b"shared by two\n"), hardlink("b", "a"),
        directory("x"), directory("y"),
        file("x/c", b"shared by three\n", mode=0o4755, xattrs={"user.k": b"v"}),
        hardlink("y/c2", "x/c"), hardlink("c3", "x/c"),
        file("single", b"alone\n"),
    ])]


def hardlinks_broken_by_upper() -> list[bytes]:
    """An upper layer deletes or replaces one name of a hard-linked file: the other
    names keep the old content and nlink counts only the names still visible."""
    return [
        make_layer([file("a", b"v1\n"), hardlink("b", "a"), hardlink("c", "a"),
                    file("p", b"p\n"), hardlink("q", "p")]),
        make_layer([whiteout("b"), file("p", b"p2\n")]),
    ]


def hardlinks_in_upper_over_lower() -> list[bytes]:
    """Hard links created by an upper layer, replacing lower files of the same names."""
    return [
        make_layer([file("a", b"old a\n"), file("b", b"old b\n")]),
        make_layer([file("a", b"new\n", mode=0o600), hardlink("b", "a"), hardlink("n", "a")]),
    ]


def symlinks() -> list[bytes]:
    return [make_layer([
        directory("dir"), file("dir/file", b"target\n"),
        symlink("abs", "/dir/file"), symlink("rel", "dir/file"), symlink("dir/up", "../rel"),
        symlink("dangling", "/does/not/exist"), symlink("todir", "dir"),
        symlink("long", "/" + "/".join(["component"] * 30)),
        symlink("spaced", "a target with spaces"), symlink("self", "self"),
        symlink("owned", "dir", uid=1000, gid=1000, mtime=1600000000),
        symlink("mode755", "dir", mode=0o755),  # Linux shows every symlink as 0777
    ])]


def xattrs() -> list[bytes]:
    return [make_layer([
        directory("d", xattrs={"user.dir": b"on a directory"}),
        file("d/text", b"t", xattrs={"user.text": b"hello", "user.second": b"2"}),
        file("binary", b"b", xattrs={"user.bin": b"\x00\xff\x01\n\x80zero"}),
        file("long-value", xattrs={"user.long": bytes(range(256)) * 4}),
        file("utf8-name", xattrs={"user.ünï": "välue".encode()}),
    ])]


def file_capabilities() -> list[bytes]:
    """security.capability as `setcap cap_net_raw+p` writes it (ping in many images)."""
    return [make_layer([directory("bin"), file("bin/ping", b"\x7fELF-ish", mode=0o755,
                                               xattrs={"security.capability": CAP_NET_RAW})])]


def devices() -> list[bytes]:
    return [make_layer([
        directory("dev"), chardev("dev/null", 1, 3), chardev("dev/zero", 1, 5, mode=0o666),
        blockdev("dev/sda", 8, 0, gid=6), chardev("dev/big-minor", 4, 300, mode=0o620, gid=5),
        blockdev("dev/nvme0n1", 259, 70000), chardev("dev/zero-zero-named", 5, 0, mode=0o000),
        fifo("dev/fifo"), fifo("fifo-0600", mode=0o600, uid=1000, gid=1000),
    ])]


def special_modes() -> list[bytes]:
    return [make_layer([
        file("setuid", b"u", mode=0o4755), file("setgid", b"g", mode=0o2755, gid=50),
        file("both", b"ug", mode=0o6755), file("sticky-file", mode=0o1644),
        file("nothing", b"no permissions at all", mode=0o000), file("readonly", mode=0o444),
        directory("tmp", mode=0o1777), directory("shared", mode=0o3775, gid=100),
        directory("private", mode=0o700, uid=1000, gid=1000),
        file("private/secret", b"s", mode=0o600, uid=1000, gid=1000),
        directory("locked", mode=0o000), file("locked/inside", b"i", mode=0o600),
        file("owned-1000", uid=1000, gid=1000), file("owned-nobody", uid=65534, gid=65534),
        file("owned-large", uid=165536, gid=200000), file("gid-only", gid=1000),
    ])]


def names() -> list[bytes]:
    long_name = "n" * 255
    return [make_layer([
        file("with space", b"1"), directory("dir with space"), file("dir with space/x y", b"2"),
        file("ünïcödé-日本語-😀", b"3"), directory(NON_UTF8), file(f"{NON_UTF8}/inside", b"4"),
        file("new\nline", b"5"), file("tab\there", b"6"), file("back\\slash", b"7"),
        file("colon:equals=percent%", b"8"), file("-dash", b"9"), file(".hidden", b"10"),
        file("...", b"11"), file(long_name, b"12"), symlink("link-to-unicode", "ünïcödé-日本語-😀"),
    ])]


def deep_paths() -> list[bytes]:
    parts = [f"level{i:02d}-{'x' * 20}" for i in range(40)]
    entries = [directory("/".join(parts[: i + 1])) for i in range(len(parts))]
    bottom = "/".join(parts)
    entries += [file(f"{bottom}/{'f' * 200}", b"at the bottom\n"),
                symlink(f"{bottom}/up", "../" * 40 + "top")]
    return [make_layer([file("top", b"top\n")] + entries),
            make_layer([whiteout(f"{'/'.join(parts[:20])}/{parts[20]}")])]


def implicit_parents() -> list[bytes]:
    """Layers that do not list parent directories: new ones are 0755 root, existing ones
    keep their attributes."""
    return [
        make_layer([directory("a", mode=0o700, uid=1000, gid=1000), file("a/b/c/file", b"c\n")]),
        make_layer([file("a/b/new", b"new\n"), file("x/y/z", b"z\n")]),
    ]


def empty_layers() -> list[bytes]:
    """Layers without entries (e.g. from `docker build` metadata steps) change nothing."""
    return [make_layer([]), make_layer([file("f", b"f\n")]), make_layer([])]


def compressed_mix() -> list[bytes]:
    return [
        make_layer(_tree_base(), "gzip"),
        make_layer([file("d/f1", b"zstd\n"), whiteout("keep")], "zstd"),
        make_layer([file("plain", b"plain\n")], "none"),
    ]


def wide_directory() -> list[bytes]:
    """Two thousand names in one directory, half deleted above: readdir paging."""
    entries = [directory("wide")] + [file(f"wide/entry-{i:05d}", str(i).encode())
                                     for i in range(2000)]
    return [make_layer(entries),
            make_layer([whiteout(f"wide/entry-{i:05d}") for i in range(0, 2000, 2)]
                       + [file(f"wide/added-{i}", b"a") for i in range(50)])]


_BUILDERS: dict[str, Callable[[], list[bytes]]] = {f.__name__: f for f in [
    basic, dot_slash_names, whiteouts, whiteout_then_recreate, whiteout_and_entry_same_layer,
    opaque_marker_first, opaque_marker_last, opaque_without_dir_entry, dir_over_dir_attrs,
    type_replacement, hardlinks, hardlinks_broken_by_upper, hardlinks_in_upper_over_lower,
    symlinks, xattrs, file_capabilities, devices, special_modes, names, deep_paths,
    implicit_parents, empty_layers, compressed_mix, wide_directory,
]}

CASES: dict[str, list[bytes]] = {name: build() for name, build in _BUILDERS.items()}

# Cases where kernel overlayfs legitimately shows something else than extracting the
# layers would, and why. The oracle follows extraction (the OCI definition).
KERNEL_DIVERGENCES: dict[str, str] = {
    "hardlinks_broken_by_upper": "overlayfs reports a lower file's own nlink, which still "
                                 "counts names that an upper layer deleted or replaced",
}


def many_layers(count: int = 100) -> list[bytes]:
    """A tall image: each layer adds a file, rewrites a shared one, deletes the previous
    layer's scratch file; every tenth layer makes a directory opaque and refills it."""
    layers = []
    for i in range(count):
        entries = [directory("layers"), file(f"layers/{i:03d}", f"layer {i}\n".encode()),
                   file("shared", f"written by layer {i}\n".encode(), mode=0o600 + i % 2),
                   file(f"scratch-{i}", b"scratch")]
        if i:
            entries.append(whiteout(f"scratch-{i - 1}"))
        if i % 10 == 0:
            entries += [directory("ring"), opaque("ring"), file(f"ring/from-{i}", b"r")]
        else:
            entries.append(file(f"ring/from-{i}", b"r"))
        layers.append(make_layer(entries))
    return layers
