"""Many users in one container: the permission differential suite.

Random sequences of operations, each run by root, alice (1000) or bob (1001, who
shares group 2000 with alice), on a layerfs runtime mount (`layerfs mount
--allow-other`: the kernel checks permissions from what layerfs serves, ACLs
included) and on kernel overlayfs over the same layers. Every errno and the final
tree must agree; then remount, diff and commit are checked as in the single-user
suite (tests/support/differential.py).

The layers hold what permissions are about, mostly in the lower layer so that every
copy-up happens under some user's credentials: a sticky /tmp with both users'
files, a setgid directory of the shared group, home directories private to each,
setuid and setgid files the group may write, an ACL'd file and a directory with a
default ACL, files only root may read or nobody may write.

Root only: kernel overlayfs needs it, and so does switching to the users.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.differential import EXAMPLES, IMAGE, Lowers, Stack, check_example, mount_container
from tests.support.fsops import (ACLS, Append, Chmod, Chown, Link, Mkdir, Read, RemoveXattr, Rename,
                                 Rmdir, SetAcl, SetXattr, Step, Truncate, Unlink, Utime, WriteFile,
                                 run_steps)
from tests.support.oci import directory, file, make_layer, symlink, write_oci_layout

if TYPE_CHECKING:
    from conftest import Layerfs

ACCESS, DEFAULT = "system.posix_acl_access", "system.posix_acl_default"


def users_stack() -> list[bytes]:
    base = make_layer([
        directory("tmp", mode=0o1777),
        file("tmp/alice", b"alice's\n", uid=1000, gid=1000),
        file("tmp/bob", b"anyone may write\n", mode=0o666, uid=1001, gid=1001),
        directory("shared", mode=0o2775, gid=2000),
        file("shared/notes", b"group notes\n", mode=0o664, uid=1000, gid=2000),
        directory("home"),
        directory("home/alice", mode=0o700, uid=1000, gid=1000),
        file("home/alice/secret", b"secret\n", mode=0o600, uid=1000, gid=1000),
        directory("home/bob", mode=0o750, uid=1001, gid=2000),
        file("home/bob/for-the-group", b"r\n", mode=0o640, uid=1001, gid=2000),
        file("setuid", b"#!/bin/sh\n", mode=0o4775, uid=1000, gid=2000),
        file("setgid", b"#!/bin/sh\n", mode=0o2775, gid=2000),
        # the mode's group bits are the ACL's mask, as a tool that wrote the ACL leaves them
        file("acl", b"bob may write\n", mode=0o664, uid=1000, gid=1000, xattrs={ACCESS: ACLS["bob-rw"]}),
        directory("acldir", mode=0o770, uid=1000, gid=1000,
                  xattrs={ACCESS: ACLS["dir-bob-rwx"], DEFAULT: ACLS["dir-bob-rwx"]}),
        file("ro", b"nobody writes\n", mode=0o444),
        # alice's, in bob's group (which alice is not in): she may set its ACL, and ext4
        # then drops the setgid bit
        file("sgid-alice", b"#!/bin/sh\n", mode=0o2775, uid=1000, gid=1001),
        file("rootonly", b"root reads\n", mode=0o600),
        symlink("tmp/link", "alice"),
    ])
    top = make_layer([
        file("tmp/top", b"from the top layer\n", uid=1001, gid=2000),
        directory("shared/sub", mode=0o2770, uid=1001, gid=2000),
        file("shared/sub/f", b"f\n", mode=0o660, uid=1001, gid=2000),
    ], "gzip")
    return [base, top]


@pytest.fixture
def stack(lfs_root: Layerfs) -> Stack:
    # not pytest's tmp_path: the users must reach the kernel's mount too
    lowers = Lowers.extract(users_stack(), lfs_root.mkdir("kernel"))
    source = lowers.scratch / "src"
    write_oci_layout(source, lowers.layers)
    lfs_root.run("import", f"oci:{source}:latest", IMAGE, "-q")
    return Stack(lfs_root, lowers)


# Cases too narrow for random steps to meet often, run as fixed sequences through the
# same checks: each names the rule it is about.
CASES: dict[str, list[Step]] = {
    "an owner outside the group sets an ACL: setgid is dropped":
        [Step("alice", SetAcl("sgid-alice", "bob-rw"))],
    "a member of the group sets an ACL: setgid stays":
        [Step("root", Chown("sgid-alice", -1, 2000)), Step("root", Chmod("sgid-alice", 0o2775)),
         Step("alice", SetAcl("sgid-alice", "bob-rw"))],
    "a default ACL, not the umask, decides a new object's mode":
        [Step("bob", WriteFile("acldir/new", b"x", 0o666), umask=0o077),
         Step("bob", Mkdir("acldir/newdir", 0o777), umask=0o077),
         Step("alice", Read("acldir/new")), Step("bob", WriteFile("acldir/newdir/deeper", b"y"))],
    "the umask applies where there is no default ACL":
        [Step("bob", WriteFile("tmp/new", b"x", 0o666), umask=0o077), Step("alice", Read("tmp/new"))],
    "chmod changes the mask of an extended ACL, and with it what bob may do":
        [Step("alice", Chmod("acl", 0o640)), Step("bob", Append("acl", b"no")),
         Step("alice", Chmod("acl", 0o660)), Step("bob", Append("acl", b"yes"))],
    "a minimal ACL is only a mode":
        [Step("alice", SetAcl("acl", "minimal-600")), Step("bob", Read("acl"))],
    "a default ACL on a file is refused":
        [Step("alice", SetAcl("acl", "bob-rw", default=True))],
    "setuid goes when someone else writes, stays when root does":
        [Step("root", Append("setuid", b"#")), Step("alice", Append("setgid", b"#")),
         Step("bob", Append("setuid", b"#"))],
    "chown drops setuid even for root; chgrp by the owner to one of its groups":
        [Step("root", Chown("setuid", 1001, -1)), Step("alice", Chown("shared/notes", -1, 1000)),
         Step("alice", Chown("shared/notes", -1, 1001))],
    "sticky /tmp: only the owner of the file or of the directory deletes":
        [Step("bob", Unlink("tmp/alice")), Step("alice", Rename("tmp/bob", "tmp/mine")),
         Step("bob", Rename("tmp/bob", "tmp/mine")), Step("root", Unlink("tmp/alice"))],
    "setgid directories pass on their group, and to directories their bit":
        [Step("alice", Mkdir("shared/newdir", 0o755)), Step("alice", WriteFile("shared/new", b"n")),
         Step("bob", WriteFile("shared/newdir/x", b"x"))],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rule(stack: Stack, case: str) -> None:
    check_example(stack, CASES[case], runner=run_steps, mount_args=("--allow-other",))


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_every_user_gets_the_kernel_overlayfs_answers(stack: Stack, data: st.DataObject) -> None:
    """Random steps by three users on a runtime mount: same errno for every step and the
    same tree as kernel overlayfs, kept across remount, reported by diff, committed."""
    check_example(stack, data.draw(stack.lowers.steps(), label="steps"), runner=run_steps,
                  mount_args=("--allow-other",))


REFUSED = [
    WriteFile("home/alice/secret", b"bob was here"), Append("ro", b"x"), Truncate("ro", 0),
    Read("rootonly"), Chmod("tmp/alice", 0o777), Chown("tmp/alice", 1001, -1),
    Chown("shared/notes", -1, 1001), Unlink("tmp/alice"), Rename("tmp/alice", "tmp/mine"),
    Mkdir("home/alice/new"), SetAcl("acl", "bob-rw"), Utime("tmp/alice", 1000000000),
    Read("tmp/alice", noatime=True), Link("rootonly", "tmp/hard"), SetXattr("ro", "user.x", b"1"),
    RemoveXattr("acl", "system.posix_acl_access"), Rmdir("home/alice"),
]


def test_refused_calls_change_nothing(stack: Stack) -> None:
    """What the kernel refuses never reaches the daemon: no journal record, no copy-up,
    no data, for objects of the lower layer and of the container alike."""
    lfs = stack.lfs
    lfs.run("create", "--name", "quiet", IMAGE)
    upper = lfs.root / "containers" / json.loads(lfs.run("ps", "-a", "--json").stdout)[0]["id"] / "upper"
    mountpoint = mount_container(lfs, "quiet", "--allow-other")
    try:
        # the same objects once more, in the container's own layer
        run_steps([Step("root", WriteFile("tmp/alice", b"now upper\n")),
                   Step("root", Chown("tmp/alice", 1000, 1000))], mountpoint)
        journal = (upper / "journal").stat().st_size
        data = sorted(os.listdir(upper / "files"))
        results = run_steps([Step("bob", op) for op in REFUSED], mountpoint)
        assert set(results) <= {"EACCES", "EPERM"}, list(zip(map(str, REFUSED), results))
        assert (upper / "journal").stat().st_size == journal
        assert sorted(os.listdir(upper / "files")) == data and os.listdir(upper / "work") == []
    finally:
        lfs.run("umount", str(mountpoint))
