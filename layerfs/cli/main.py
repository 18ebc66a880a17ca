"""`layerfs`: the argument parser, and the one place errors become a line and an exit code."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from layerfs.cli.output import GuardedStdout
from layerfs.errors import EXIT_BUSY, EXIT_ERROR, EXIT_NOT_FOUND, EXIT_USAGE, LayerfsError

if TYPE_CHECKING:
    from layerfs.store.layout import Store

EPILOG = f"""\
exit codes: 0 success; {EXIT_ERROR} error (bad input, failure); {EXIT_USAGE} usage error;
{EXIT_NOT_FOUND} unknown reference or missing file; {EXIT_BUSY} busy or in use.

The store is an OCI image layout, so skopeo and umoci can read it:
  skopeo inspect oci:$LAYERFS_ROOT:NAME:TAG
"""

SOURCES = """\
SOURCE is TRANSPORT:DETAILS, as skopeo writes it:
  oci:DIR[:REF]             an OCI image layout directory (REF: its ref.name)
  oci-archive:FILE[:REF]    a tar of an OCI image layout
  docker-archive:FILE       a `docker save` archive (old and Docker 25+ layouts)
  dir:ROOTFS                a root filesystem directory, as a one-layer image (all of it
                            or nothing, unless --skip-unreadable)
  tar:FILE                  a root filesystem tarball (plain, gzip or zstd), one layer
"""


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line too, like every other error, pointing at --help."""

    def error(self, message: str) -> "NoReturn":  # type: ignore[override]
        self.exit(EXIT_USAGE, f"layerfs: error: {message} (see `{self.prog} --help`)\n")

    def exit(self, status: int = 0, message: str | None = None) -> "NoReturn":  # type: ignore[override]
        sys.stdout.flush()  # --help into a closed pipe fails as one line, not at interpreter exit
        super().exit(status, message)


def _store_root(text: str) -> Path:
    """--root's type: an empty value would make the current directory a store."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path would make the current directory a store")
    return Path(text)


def _parser() -> argparse.ArgumentParser:
    from layerfs.cli import commands as c
    from layerfs.cli import namespace_commands as nc
    from layerfs.cli import container_commands as cc

    parser = _Parser(
        prog="layerfs", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Container images as layered union filesystems, rootless.")
    parser.add_argument("--root", metavar="DIR", type=_store_root,
                        help="the store (default: $LAYERFS_ROOT, else /var/lib/layerfs for root, "
                             "${XDG_DATA_HOME:-~/.local/share}/layerfs for other users); root "
                             "working on a store another user owns acts as that user")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, func, help: str, description: str | None = None,  # noqa: A002, ANN001
                under: argparse._SubParsersAction = sub) -> argparse.ArgumentParser:
        p = under.add_parser(name, help=help, description=description or help,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func, uses_store=True)
        return p

    p = command("import", c.cmd_import, "import an image into the store",
                "Import an image into the store, verifying every digest.\n\n" + SOURCES)
    p.add_argument("source", metavar="SOURCE", help="where the image is (see above)")
    p.add_argument("name", metavar="NAME[:TAG]", nargs="?",
                   help="the name to give it (default: the source's own name, if it has one)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar; print only the image id")
    p.add_argument("--skip-unreadable", action="store_true",
                   help="dir: only. Leave out the files and directories this user cannot read, "
                        "listing each on stderr, and import the rest (without it, an unreadable "
                        "path fails the import: an image never lacks part of its tree unnoticed)")

    p = command("images", c.cmd_images, "list the images in the store")
    p.add_argument("--json", action="store_true", help="print a JSON list (id, digest, names, created, size)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the short image ids")

    p = command("inspect", c.cmd_inspect, "show an image's manifest, config and layers")
    p.add_argument("ref", metavar="REF", help="name[:tag], name@sha256:DIGEST, or an image id (prefix)")
    p.add_argument("--json", action="store_true", help="print manifest, config and layers as JSON")

    p = command("tag", c.cmd_tag, "give an image another name")
    p.add_argument("source", metavar="SOURCE_REF", help="the image, by name, digest or id")
    p.add_argument("target", metavar="NAME[:TAG]", help="the new name; it moves if another image had it")

    p = command("rmi", c.cmd_rmi, "remove image names, and images left without a name",
                "Remove image names, as docker does. REF as a name removes that name, and the\n"
                "image with its last name; as an id or digest it removes the image with all its\n"
                "names. Blobs and unpacked layers no other image uses are reclaimed. An image\n"
                "that a container uses or that is mounted is not removed (exit 4). All REFs are\n"
                "removed, or none.")
    p.add_argument("refs", metavar="REF", nargs="+", help="name[:tag], name@sha256:DIGEST or image id")
    p.add_argument("-f", "--force", action="store_true",
                   help="remove an image given by id even if it has several names; for an image "
                        "a container uses or that is mounted, remove its names anyway and keep "
                        "the image, unnamed, for that use")

    p = command("mount", c.cmd_mount, "mount a container read-write, or an image read-only",
                "Mount a container (read-write: its writable layer over its image) or an image\n"
                "(read-only), rootless or as root. Returns once the mount is live; a daemon\n"
                "serves it until `layerfs umount`. Container names and ids are tried first.\n\n"
                "Two kinds of mount:\n"
                "  browse   (a user on the host, the default): only you may enter, and you may read\n"
                "           every file, even those the image keeps for root. Nothing is checked.\n"
                "  runtime  (root inside a user namespace, e.g. in `layerfs unshare`; or root with\n"
                "           --allow-other): every user may enter and the kernel checks permissions\n"
                "           and POSIX ACLs as ext4 does. Inside a namespace setuid programs work.\n"
                "Both are noatime: atime changes only when a program sets it.")
    p.add_argument("ref", metavar="REF", help="a container (name or id), or an image (name, digest or id)")
    p.add_argument("mountpoint", metavar="MOUNTPOINT", help="an existing, empty directory")
    p.add_argument("--foreground", action="store_true",
                   help="serve from this process until Ctrl-C or umount, instead of a daemon")
    p.add_argument("--allow-other", action="store_true",
                   help="root only: a runtime mount other host users can use (e.g. a service "
                        "account), with permissions checked by the kernel; nosuid and nodev, so that "
                        "the image's setuid programs give nobody root on the host")

    p = command("umount", c.cmd_umount, "unmount a layerfs mount")
    p.add_argument("mountpoint", metavar="MOUNTPOINT", help="where the image is mounted")

    p = command("unshare", nc.cmd_unshare, "run a shell or command as root of your user namespace",
                "Run COMMAND (default: $SHELL) as root of a new user namespace of yours, with a\n"
                "mount namespace of its own, as `podman unshare` does: your id is 0 there and\n"
                "your subordinate ids (/etc/subuid, /etc/subgid) are 1, 2, ... A `layerfs mount`\n"
                "in there is a runtime mount: every id of the namespace may use it, with the\n"
                "permissions the image gives. Its mounts end when COMMAND ends. Exits with\n"
                "COMMAND's status (127: not found, 126: cannot run, 128+N: killed by signal N).")
    p.add_argument("--single-id", action="store_true",
                   help="map only your own id (as 0), even if you have subordinate ids: other "
                        "owners then show as nobody (65534) and cannot be written")
    p.add_argument("command", metavar="COMMAND", nargs=argparse.REMAINDER,
                   help="the command and its arguments")
    p.set_defaults(uses_store=False)  # the layerfs commands run in there open their own

    p = command("mounts", c.cmd_mounts, "list the live mounts of this store")
    p.add_argument("--json", action="store_true",
                   help="print a JSON list (mountpoint, image, id, pid, kind, namespace, here)")

    p = command("create", cc.cmd_create, "create a container (a writable layer) from an image",
                "Create a container from an image and print its id. The container records the\n"
                "exact image it was made from; `layerfs rmi` will not remove that image under it.")
    p.add_argument("image", metavar="IMAGE", help="the image, by name, digest or id")
    p.add_argument("--name", help="a name for the container (default: IMAGE-<6 hex of its id>)")

    p = command("ps", cc.cmd_ps, "list containers")
    p.add_argument("-a", "--all", action="store_true", help="list every container, not only mounted ones")
    p.add_argument("--json", action="store_true",
                   help="print a JSON list (id, name, image, image_digest, image_ref, created, status, size)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the short container ids")

    p = command("rm", cc.cmd_rm, "remove containers and their writable layers",
                "Remove containers and their writable layers. Volumes are never removed with them. "
                "A mounted container is refused (exit 4) unless -f is given.")
    p.add_argument("containers", metavar="CONTAINER", nargs="+", help="a name, id or unique id prefix")
    p.add_argument("-f", "--force", action="store_true",
                   help="unmount a mounted container first, even when busy (processes still using "
                        "the mount then get ENOTCONN)")

    p = command("diff", cc.cmd_diff, "list what a container added (A), changed (C) and deleted (D)")
    p.add_argument("container", metavar="CONTAINER", help="a name, id or unique id prefix")
    p.add_argument("--json", action="store_true", help="print a JSON list of {path, kind}")

    p = command("commit", cc.cmd_commit, "make a new image from a container's changes",
                "Make a new image: the container's image layers plus one new layer holding its\n"
                "changes (OCI whiteouts for deletions). The container must not be mounted.\n"
                "Prints the new image's id.")
    p.add_argument("container", metavar="CONTAINER", help="a name, id or unique id prefix")
    p.add_argument("name", metavar="NAME[:TAG]", help="the new image's name")
    p.add_argument("-m", "--message", help="a comment for the new layer's history entry")

    volume = command("volume", None, "manage named data volumes",
                     "Named data volumes live outside every container and survive their removal.")
    volumes = volume.add_subparsers(dest="volume_command", metavar="COMMAND", required=True)

    p = command("create", cc.cmd_volume_create, "create a volume and print its name", under=volumes)
    p.add_argument("name", metavar="NAME", nargs="?", help="the volume's name (default: a random id)")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="attach a label (repeatable)")
    p = command("ls", cc.cmd_volume_ls, "list volumes", under=volumes)
    p.add_argument("--json", action="store_true", help="print a JSON list (name, created, mountpoint, labels, driver)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the names")
    p = command("inspect", cc.cmd_volume_inspect, "print volumes as JSON", under=volumes)
    p.add_argument("names", metavar="NAME", nargs="+", help="the volumes")
    p = command("rm", cc.cmd_volume_rm, "remove volumes and their data", under=volumes)
    p.add_argument("names", metavar="NAME", nargs="+", help="the volumes")
    return parser


def _open_store(root: Path | None) -> Store:
    from layerfs.store.layout import Store, act_as_owner, default_root

    root = root or default_root()
    act_as_owner(root)
    store = Store(root)
    store.check()
    return store


def _fail(message: str, code: int) -> int:
    print(f"layerfs: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    sys.stdout = GuardedStdout(sys.stdout)
    try:
        args = _parser().parse_args(argv)
        store = _open_store(args.root) if args.uses_store else None
        code = args.func(store, args)  # a status of its own, or None: 0
        sys.stdout.flush()  # a reader gone early fails here, as one line, not at exit
    except LayerfsError as e:
        return _fail(e.message, e.exit_code)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        return _fail(f"{e.strerror or e}{where}", EXIT_ERROR)
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
