"""An image that containers can really run in: busybox with every applet, users and
groups to switch between, a root password for `su`, and an image config of choice.

The test image of the other suites (support.oci.busybox_image_layers) has only the
applets its tree checks need; the launcher's tests need a shell, ps, su, trap, and
every user of /etc/passwd able to use them.
"""

from __future__ import annotations

import subprocess
import warnings

from support.oci import BUSYBOX, directory, file, make_layer, symlink

ROOT_PASSWORD = "secret"
PASSWD = (b"root:x:0:0:root:/root:/bin/sh\n"
          b"app:x:1000:1000:App:/home/app:/bin/sh\n"
          b"other:x:1001:1001:Other:/home/other:/bin/sh\n"
          b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
GROUP = b"root:x:0:\nshadow:x:42:\napp:x:1000:\nother:x:1001:\nstaff:x:50:app\nnogroup:x:65534:\n"


def _root_hash() -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt as hashing  # deprecated in 3.11, but the stdlib's only password hasher
        return hashing.crypt(ROOT_PASSWORD, hashing.mksalt(hashing.METHOD_SHA512))


def runnable_layer() -> bytes:
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout.split()
    specs = [directory(d) for d in ("bin", "etc", "home", "usr", "usr/bin", "var", "srv")]
    specs += [
        directory("root", mode=0o700), directory("tmp", mode=0o1777),
        directory("home/app", uid=1000, gid=1000), directory("home/other", uid=1001, gid=1001),
        file("bin/busybox", BUSYBOX.read_bytes(), mode=0o4755),  # su needs it setuid
        file("etc/passwd", PASSWD),
        file("etc/group", GROUP),
        file("etc/shadow", f"root:{_root_hash()}:19000:0:99999:7:::\n".encode(), mode=0o640, gid=42),
        file("etc/hostname", b"from-the-image\n"),
        file("root/secret", b"root only\n", mode=0o600),
        file("bin/not-executable", b"#!/bin/sh\necho never\n", mode=0o644),
    ]
    specs += [symlink(f"bin/{name}", "busybox") for name in applets if name != "busybox"]
    return make_layer(specs)
