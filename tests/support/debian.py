"""A small Debian image made from this machine's own packages, and .deb files made here.

No network: the image holds the installed files of dpkg, passwd (useradd), dash,
coreutils and what they depend on, with a dpkg database that knows them, so that
`dpkg -i` inside a container does what it does on a Debian system (maintainer
scripts, useradd, chown). Documentation, manuals and translations are left out.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import tarfile
from pathlib import Path

PACKAGES = ("dpkg", "passwd", "dash", "coreutils", "base-files", "libc-bin", "tar", "sed", "grep",
            "findutils", "diffutils", "debianutils")
_LEFT_OUT = ("/usr/share/doc/", "/usr/share/man/", "/usr/share/locale/", "/usr/share/info/",
             "/usr/share/lintian/", "/usr/lib/x86_64-linux-gnu/gconv/")
_ETC = {
    "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    "etc/group": b"root:x:0:\nnogroup:x:65534:\n",
    "etc/shadow": b"root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n",
    "etc/gshadow": b"root:*::\nnogroup:*::\n",
}


def _query(package: str, field: str) -> str:
    return subprocess.run(["dpkg-query", "-W", f"-f=${{{field}}}", package], capture_output=True,
                          text=True).stdout


def _installed(package: str) -> bool:
    return _query(package, "db:Status-Status") == "installed"


def _closure(packages: tuple[str, ...]) -> list[str]:
    """The packages and, recursively, what they depend on (the installed choice of each)."""
    seen: set[str] = set()
    todo = list(packages)
    while todo:
        package = todo.pop()
        if package in seen:
            continue
        seen.add(package)
        depends = _query(package, "Depends") + "," + _query(package, "Pre-Depends")
        for alternatives in filter(None, (d.strip() for d in depends.split(","))):
            names = [re.split(r"[ (:]", choice.strip())[0] for choice in alternatives.split("|")]
            todo += [name for name in names if _installed(name)][:1]
    return sorted(seen)


def _in_image(path: str) -> str:
    """Where a path a package lists is really stored, below merged /usr (/bin -> usr/bin)."""
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path)).lstrip("/")


def debian_layer() -> bytes:
    """The image's one layer, as an uncompressed tar."""
    packages = _closure(PACKAGES)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        added: set[str] = set()

        def add(path: str, arcname: str) -> None:
            if arcname and arcname not in added:
                added.add(arcname)
                tar.add(path, arcname, recursive=False)

        for top in ("bin", "sbin", "lib", "lib64"):  # merged /usr: symbolic links
            if os.path.lexists(f"/{top}"):
                add(f"/{top}", top)
        for package in packages:
            listed = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True).stdout.splitlines()
            for path in listed:
                if path.startswith(_LEFT_OUT) or not os.path.lexists(path) or path == "/.":
                    continue
                parts = _in_image(path).split("/")
                for i in range(1, len(parts)):  # parents first, as they are on the host
                    add("/" + "/".join(parts[:i]), "/".join(parts[:i]))
                add(path, _in_image(path))
            for info in Path("/var/lib/dpkg/info").glob(f"{package}[.:]*"):
                add(str(info), f"var/lib/dpkg/info/{info.name}")
        for directory in ("root", "tmp", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "var/log", "etc"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755
            if directory not in added:
                tar.addfile(info)
        status = b"\n".join(subprocess.run(["dpkg-query", "-s", package], capture_output=True).stdout
                            for package in packages)
        files = dict(_ETC, **{"var/lib/dpkg/status": status, "var/lib/dpkg/available": b"",
                              "etc/login.defs": Path("/etc/login.defs").read_bytes()})
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o640 if "shadow" in name else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def build_deb(dest: Path, name: str, postinst: str, files: dict[str, bytes]) -> Path:
    """A .deb of `files` (path -> content) with a postinst script, built by dpkg-deb."""
    tree = dest / f"{name}-build"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: layerfs tests <tests@layerfs>\n"
        f"Description: made by the layerfs test suite\n")
    script = tree / "DEBIAN" / "postinst"
    script.write_text(postinst)
    script.chmod(0o755)
    for path, data in files.items():
        target = tree / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    deb = dest / f"{name}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)], check=True,
                   capture_output=True)
    return deb
