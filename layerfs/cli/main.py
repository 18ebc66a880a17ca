"""`layerfs`: the argument parser, and the one place errors become a line and an exit code."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from layerfs.cli.output import GuardedStdout
from layerfs.errors import EXIT_BUSY, EXIT_ERROR, EXIT_LAUNCHER, EXIT_NOT_FOUND, EXIT_USAGE, Busy, LayerfsError

if TYPE_CHECKING:
    from layerfs.store.layout import Store

EPILOG = f"""\
exit codes: 0 success; {EXIT_ERROR} error (bad input, failure); {EXIT_USAGE} usage error;
{EXIT_NOT_FOUND} unknown reference or missing file; {EXIT_BUSY} busy or in use.
run, create, start and exec exit with the container's status, or {EXIT_LAUNCHER} when layerfs
itself failed (usage errors too), as docker's do.

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

    usage_code = EXIT_USAGE

    def error(self, message: str) -> "NoReturn":  # type: ignore[override]
        self.exit(self.usage_code, f"layerfs: error: {message} (see `{self.prog} --help`)\n")

    def exit(self, status: int = 0, message: str | None = None) -> "NoReturn":  # type: ignore[override]
        sys.stdout.flush()  # --help into a closed pipe fails as one line, not at interpreter exit
        super().exit(status, message)


def _store_root(text: str) -> Path:
    """--root's type: an empty value would make the current directory a store."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path would make the current directory a store")
    return Path(text)


def build_parser() -> argparse.ArgumentParser:
    from layerfs.cli import commands as c
    from layerfs.cli import namespace_commands as nc
    from layerfs.cli import run_commands as rc
    from layerfs.cli import container_commands as cc
    from layerfs.cli import inspect_commands as ic
    from layerfs.cli import registry_commands

    parser = _Parser(
        prog="layerfs", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Container images as layered union filesystems, rootless.")
    parser.add_argument("--root", metavar="DIR", type=_store_root,
                        help="the store (default: $LAYERFS_ROOT, else /var/lib/layerfs for root, "
                             "${XDG_DATA_HOME:-~/.local/share}/layerfs for other users); root "
                             "working on a store another user owns acts as that user")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, func, help: str, description: str | None = None,  # noqa: A002, ANN001
                under: argparse._SubParsersAction = sub, launches: bool = False) -> argparse.ArgumentParser:
        """`launches`: a command that runs a container fails as docker's do, with 125
        for every error of its own (usage included) but busy (4)."""
        p = under.add_parser(name, help=help, description=description or help,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func, uses_store=True, launches=launches, parser=p)
        if launches:
            p.usage_code = EXIT_LAUNCHER
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

    p = command("inspect", c.cmd_inspect, "show an image's manifest, config and layers",
                "Show an image's manifest, config and layers (a container's record, for a container).\n\n"
                "--tui browses the image layer by layer, as dive does: the layers on the left, the\n"
                "merged tree as of the selected layer on the right, with what that layer added (A),\n"
                "modified (C) and deleted (D); enter on a file shows it, or its diff; w shows the\n"
                "wasted space; the footer lists the keys. It needs a terminal. Its REF may also be\n"
                "REF@N or an oci:, oci-archive: or docker-archive: source (imported first, once).")
    p.add_argument("ref", metavar="REF",
                   help="a container (name or id), or an image: name[:tag], name@sha256:DIGEST, an id "
                        "(prefix), or oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:REF] "
                        "(imported first, once); with --tui also REF@N; or docker://REF, read from its "
                        "registry without pulling (as skopeo inspect: JSON; --raw, --config)")
    p.add_argument("--json", action="store_true", help="print manifest, config and layers as JSON")
    p.add_argument("--tui", action="store_true",
                   help="browse the layers and their changes interactively (needs a terminal)")
    p.add_argument("--raw", action="store_true",
                   help="docker://REF only: print the manifest (or index) exactly as the registry sends it")
    p.add_argument("--config", action="store_true", help="docker://REF only: print the image's config")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                   help="docker://REF only: the platform to read from a multi-platform image")
    registry_commands.add_access_options(p)

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
                "Both are noatime: atime changes only when a program sets it.\n\n"
                "History: REF@N mounts the image as it was after its layer N (1 is the base, as\n"
                "`layerfs inspect` numbers them), read-only. --layer N mounts only what layer N\n"
                "holds, read-only, as its tar has it: a path the layer deletes shows as an empty\n"
                "file .wh.NAME beside it, and a directory the layer makes opaque (hiding all it\n"
                "had below) holds an empty file .wh..wh..opq. An image elsewhere (oci:DIR[:TAG],\n"
                "oci-archive:FILE[:TAG], docker-archive:FILE[:REF]) is imported first, once.")
    p.add_argument("ref", metavar="REF",
                   help="a container (name or id), or an image: name[:tag], name@sha256:DIGEST, an "
                        "id (prefix), REF@N (the image after its layer N), or an oci:, oci-archive: "
                        "or docker-archive: source (imported first, once)")
    p.add_argument("mountpoint", metavar="MOUNTPOINT", help="an existing, empty directory")
    from layerfs.cli.references import layer_number
    p.add_argument("--layer", metavar="N", type=layer_number,
                   help="images only: mount only layer N (1 is the base), read-only, whiteouts "
                        "shown as the layer holds them: .wh.NAME for a deleted NAME, "
                        ".wh..wh..opq in an opaque directory")
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
    from layerfs.cli import archive_commands, layer_commands, service_commands
    layer_commands.register(command)
    archive_commands.register(command)
    registry_commands.register(command)

    p = command("run", rc.cmd_run, "run a command in a new container",
                "Create a container from IMAGE and run COMMAND in it (default: the image's\n"
                "Entrypoint and Cmd), rootless: in a user namespace of yours (your subordinate\n"
                "ids mapped, see `layerfs unshare`), with pid, mount, uts and ipc namespaces of\n"
                "its own, on a runtime mount of its writable layer. Exits with COMMAND's status:\n"
                "125 when layerfs could not run it, 126 when it cannot be executed, 127 when it\n"
                "is not found, 128+N when signal N ended it.", launches=True)
    p.add_argument("--rm", action="store_true", help="remove the container (and its anonymous volumes) when it exits")
    p.add_argument("-d", "--detach", action="store_true",
                   help="run in the background and print the container's name; see `layerfs logs`")
    rc.add_run_options(p)

    p = command("create", rc.cmd_create, "create a container (a writable layer) from an image",
                "Create a container from an image, with what `run` would run in it, and print its\n"
                "id; `layerfs start` runs it. The container records the exact image it was made\n"
                "from; `layerfs rmi` will not remove that image under it.", launches=True)
    rc.add_run_options(p)

    p = command("start", rc.cmd_start, "start containers (in the background unless -a)", launches=True)
    p.add_argument("-a", "--attach", action="store_true",
                   help="run in the foreground, with the terminal, and exit with its status")
    p.add_argument("containers", metavar="CONTAINER", nargs="+", help="a name, id or unique id prefix")

    for name, func, what in (("stop", rc.cmd_stop, "stop running containers: StopSignal, then SIGKILL"),
                             ("restart", rc.cmd_restart, "stop, then start, containers")):
        p = command(name, func, what)
        p.add_argument("-t", "--time", type=float, default=10.0, metavar="SECONDS",
                       help="how long to wait before SIGKILL (default 10)")
        p.add_argument("containers", metavar="CONTAINER", nargs="+", help="a name, id or unique id prefix")

    p = command("kill", rc.cmd_kill, "send a signal to running containers")
    p.add_argument("-s", "--signal", default="SIGKILL", help="the signal, by name or number (default SIGKILL)")
    p.add_argument("containers", metavar="CONTAINER", nargs="+", help="a name, id or unique id prefix")

    for name, func, what in (
            ("pause", rc.cmd_pause, "freeze every process of running containers (SIGSTOP: there "
                                    "is no cgroup freezer here)"),
            ("unpause", rc.cmd_unpause, "continue paused containers"),
            ("wait", rc.cmd_wait, "wait for containers to stop, and print their exit codes")):
        p = command(name, func, what)
        p.add_argument("containers", metavar="CONTAINER", nargs="+", help="a name, id or unique id prefix")

    p = command("exec", rc.cmd_exec, "run a command in a running container",
                "Run COMMAND in a running container's namespaces (it sees the container's mounts\n"
                "and processes), with the container's environment. Exits with its status.", launches=True)
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open to the command")
    p.add_argument("-t", "--tty", action="store_true", help="give the command a terminal (a pty)")
    p.add_argument("-u", "--user", metavar="USER[:GROUP]", help="run as this user (default: the container's)")
    p.add_argument("-w", "--workdir", metavar="DIR", help="the working directory (default: the container's)")
    p.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE",
                   help="set a variable; repeatable")
    p.add_argument("container", metavar="CONTAINER", help="a name, id or unique id prefix")
    p.add_argument("command", metavar="COMMAND", nargs=argparse.REMAINDER, help="the command and its arguments")

    p = command("logs", rc.cmd_logs, "print the output of a detached container",
                "Print what a detached container wrote, stdout to stdout and stderr to stderr,\n"
                "kept across stop and start until the container is removed.")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the container stops")
    p.add_argument("-t", "--timestamps", action="store_true", help="put each line's time before it")
    p.add_argument("container", metavar="CONTAINER", help="a name, id or unique id prefix")

    p = command("ps", cc.cmd_ps, "list containers")
    p.add_argument("-a", "--all", action="store_true",
                   help="list every container, not only running, paused and mounted ones")
    p.add_argument("--json", action="store_true",
                   help="print a JSON list (id, name, image, image_digest, image_ref, created, status: created, "
                        "running, paused, exited or mounted; exit_code, pid, started_at, finished_at, command, size)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the short container ids")

    p = command("rm", cc.cmd_rm, "remove containers and their writable layers",
                "Remove containers and their writable layers. Named volumes are never removed with "
                "them. A running or mounted container is refused (exit 4) unless -f is given.")
    p.add_argument("containers", metavar="CONTAINER", nargs="+", help="a name, id or unique id prefix")
    p.add_argument("-f", "--force", action="store_true",
                   help="kill a running container first (SIGKILL), or unmount a mounted one, even when "
                        "busy (processes still using the mount then get ENOTCONN)")
    p.add_argument("-v", "--volumes", action="store_true",
                   help="also remove the container's anonymous volumes (those its image declares)")

    ic.register(command)
    service_commands.register(command)

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


def _split_diff_path(argv: list[str]) -> tuple[list[str], str | None]:
    """`layerfs diff ... -- PATH`: argparse would take PATH for one more REF, or, after
    options, for an unknown argument; so it is cut off here (diff takes one PATH)."""
    if "--" not in argv:
        return argv, None
    cut = argv.index("--")
    first = 0  # the command comes after the top options (--root DIR takes a value)
    while first < cut and argv[first].startswith("-"):
        first += 2 if argv[first] == "--root" else 1
    if first >= cut or argv[first] != "diff" or len(argv) != cut + 2:
        return argv, None
    return argv[:cut], argv[cut + 1]


def main(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    """Run one command. `parser`: one built before (the service builds it once, and
    forks a worker per command)."""
    sys.stdout = GuardedStdout(sys.stdout)
    args = argparse.Namespace()
    try:
        argv, after = _split_diff_path(sys.argv[1:] if argv is None else argv)
        args, extra = (parser or build_parser()).parse_known_args(argv)
        if after is not None:
            args.file_path = after
        if extra:  # the command's own usage error (and exit code), not the top parser's
            args.parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if hasattr(args, "error_exit_for"):  # a command whose exit 1 means something else
            args.error_exit = args.error_exit_for(args)
        store = _open_store(args.root) if args.uses_store else None
        code = args.func(store, args)  # a status of its own, or None: 0
        sys.stdout.flush()  # a reader gone early fails here, as one line, not at exit
    except LayerfsError as e:
        launches = getattr(args, "launches", False) and not isinstance(e, Busy)
        return _fail(e.message, EXIT_LAUNCHER if launches else getattr(args, "error_exit", None) or e.exit_code)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        code = EXIT_LAUNCHER if getattr(args, "launches", False) else getattr(args, "error_exit", None) or EXIT_ERROR
        return _fail(f"{e.strerror or e}{where}", code)
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
