"""`layerfs pull`, `push`, `login`, `logout`, `tags`: images to and from registries."""

from __future__ import annotations

import argparse
import getpass
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

from layerfs.cli.output import print_json
from layerfs.cli.progress import progress_for_terminal
from layerfs.cli.signals import terminate_as_interrupt
from layerfs.errors import BadInput, LayerfsError, NotFound
from layerfs.store.layout import Store

ACCESS_HELP = """\
Registries are reached over HTTPS, verified against the system's CAs plus the *.crt
files of --cert-dir (default: the first of ~/.config/containers/certs.d/HOST:PORT,
/etc/containers/certs.d/HOST:PORT, /etc/docker/certs.d/HOST:PORT). --tls-verify=false
turns verification off and also allows plain HTTP (a local registry). Credentials
come from --creds, else from the auth file: --authfile, $REGISTRY_AUTH_FILE,
$XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json or
~/.docker/config.json (what `layerfs login`, `podman login` and `docker login` write).
"""

REF_FORMS = """\
REF is normalised as docker does: alpine is docker.io/library/alpine:latest,
user/app is docker.io/user/app:latest, HOST[:PORT]/NAME[:TAG] names another
registry (the first component is a host when it has a "." or ":" or is localhost),
and NAME@sha256:DIGEST (or NAME:TAG@sha256:DIGEST) pins the manifest.
"""


def _bool(text: str) -> bool:
    value = text.lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError("expected 1 to 64")
    return value


def _size(text: str) -> int:
    match = re.fullmatch(r"(\d+)([kmg]?)b?", text.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"expected a size such as 5242880, 16M or 1G, not {text!r}")
    value = int(match.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[match.group(2)]
    if value < 5 << 20:
        raise argparse.ArgumentTypeError("chunks must be at least 5M (registries backed by S3 refuse smaller)")
    return value


def add_access_options(p: argparse.ArgumentParser, creds: bool = True) -> None:
    """The options every command that talks to a registry takes (as skopeo's)."""
    p.add_argument("--tls-verify", type=_bool, nargs="?", const=True, default=True, metavar="BOOL",
                   help="verify the registry's TLS certificate (default true); false also allows "
                        "plain HTTP")
    p.add_argument("--cert-dir", type=Path, metavar="DIR",
                   help="CA certificates (*.crt) and client certificates (NAME.cert + NAME.key) "
                        "for the registry")
    p.add_argument("--authfile", type=Path, metavar="FILE",
                   help="the credentials file to read and write (auth.json format)")
    if creds:
        p.add_argument("--creds", metavar="USER[:PASSWORD]",
                       help="credentials for this call only, instead of the stored login")


def _add_transfer_options(p: argparse.ArgumentParser, jobs: str, printed: str) -> None:
    p.add_argument("-j", "--jobs", type=_jobs, default=6, metavar="N",
                   help=f"{jobs} (default 6, as podman)")
    p.add_argument("-q", "--quiet", action="store_true", help=f"no progress bars; print only {printed}")
    add_access_options(p)


def access_from(args: argparse.Namespace):  # noqa: ANN201 - registry.client.Access
    from layerfs.registry.client import Access
    from layerfs.registry.credentials import parse_creds
    return Access(tls_verify=args.tls_verify, cert_dir=args.cert_dir, authfile=args.authfile,
                  creds=parse_creds(args.creds) if getattr(args, "creds", None) else None)


def register(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add the commands of this module through main's `command(name, func, help, ...)`."""
    p = command("pull", cmd_pull, "pull an image from a registry into the store",
                "Pull an image from a registry (the OCI distribution API: Docker Hub, quay,\n"
                "GHCR, Harbor, a CNCF distribution server) into the store, under its\n"
                "normalised name. From a multi-platform image the host's platform is taken\n"
                "(--platform to choose another). Layers download in parallel, each unpacked\n"
                "while it downloads, every digest checked as the bytes stream; a broken\n"
                "connection is resumed where it stopped; layers the store already has are\n"
                "not downloaded. Nothing is in the store before the whole image checked out,\n"
                "so a failure or Ctrl-C leaves it as it was.\n\n" + REF_FORMS + "\n" + ACCESS_HELP)
    p.add_argument("ref", metavar="REF", help="the image, e.g. alpine, HOST:PORT/NAME:TAG or NAME@sha256:...")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                   help="the platform to take from a multi-platform image (default: this machine's)")
    _add_transfer_options(p, "layers to download at once", "the image id")

    p = command("push", cmd_push, "push an image of the store to a registry",
                "Push IMAGE (a name, id or digest of the store; a committed container's image\n"
                "too) to DEST (default: IMAGE's own name, which then must say where, e.g.\n"
                "127.0.0.1:5000/app:1). Blobs the repository already has are skipped; a blob\n"
                "layerfs has seen in another repository of the same registry is mounted from\n"
                "there instead of uploaded; the manifest goes last, byte for byte, so the\n"
                "image keeps its digest there.\n\n" + REF_FORMS + "\n" + ACCESS_HELP)
    p.add_argument("image", metavar="IMAGE", help="the image in the store")
    p.add_argument("dest", metavar="DEST", nargs="?", help="[docker://]HOST[:PORT]/NAME[:TAG] (default: IMAGE)")
    p.add_argument("--chunk-size", type=_size, metavar="SIZE",
                   help="upload blobs larger than SIZE (e.g. 16M) in chunks of SIZE (default: one "
                        "request per blob)")
    p.add_argument("--digestfile", type=Path, metavar="FILE", help="write the pushed manifest's digest to FILE")
    _add_transfer_options(p, "blobs to upload at once", "the manifest digest")

    p = command("login", cmd_login, "log in to a registry and store the credentials",
                "Check credentials against REGISTRY (basic auth or its token server) and store\n"
                "them in the auth file (default $XDG_RUNTIME_DIR/containers/auth.json, else\n"
                "~/.config/containers/auth.json; --authfile to choose), where podman and\n"
                "skopeo find them too. Without -p the password is asked for on the terminal,\n"
                "or read from standard input with --password-stdin.\n\n" + ACCESS_HELP)
    p.add_argument("registry", metavar="REGISTRY", help="HOST[:PORT], e.g. quay.io or 127.0.0.1:5000")
    p.add_argument("-u", "--username", help="the user name (asked for on a terminal when missing)")
    p.add_argument("-p", "--password", help="the password (visible to other users in ps: prefer "
                                            "--password-stdin)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.add_argument("--get-login", action="store_true",
                   help="print the user name stored for REGISTRY and check nothing")
    add_access_options(p, creds=False)
    p.set_defaults(uses_store=False)

    p = command("logout", cmd_logout, "remove the stored credentials for a registry")
    p.add_argument("registry", metavar="REGISTRY", nargs="?", help="HOST[:PORT]")
    p.add_argument("-a", "--all", action="store_true", help="remove the credentials of every registry")
    p.add_argument("--authfile", type=Path, metavar="FILE", help="the credentials file (auth.json format)")
    p.set_defaults(uses_store=False)

    p = command("tags", cmd_tags, "list the tags of a repository in a registry",
                "List the tags of a repository, as `skopeo list-tags` does (the distribution\n"
                "API has no search across repositories).\n\n" + ACCESS_HELP)
    p.add_argument("ref", metavar="docker://NAME", help="the repository, e.g. docker://127.0.0.1:5000/app")
    p.add_argument("--json", action="store_true", help="print {\"Repository\": ..., \"Tags\": [...]}")
    add_access_options(p)
    p.set_defaults(uses_store=False)


PULL_POLICIES = ("missing", "always", "never")


def add_pull_options(p: argparse.ArgumentParser) -> None:
    """`run` and `create` pull what the store lacks, as docker and podman do."""
    p.add_argument("--pull", choices=PULL_POLICIES, default="missing",
                   help="missing: pull IMAGE from its registry when the store does not have it "
                        "(default, as podman); always: pull it first; never: the store only")
    add_access_options(p)


def image_or_pull(store: Store, args: argparse.Namespace):  # noqa: ANN201 - image.catalog.Image
    """The image `run` or `create` starts from, pulled by --pull's policy. When the store
    lacks it and the pull fails too, the one error line says both."""
    from layerfs.image.catalog import Catalog
    from layerfs.image.reference import is_digest, is_id_prefix

    if args.pull != "always":
        try:
            return Catalog(store).resolve(args.image)
        except NotFound as missing:
            if args.pull == "never" or is_digest(args.image) or is_id_prefix(args.image):
                raise
            try:
                return _pull_for_run(store, args)
            except LayerfsError as failed:
                raise NotFound(f"{missing.message}; pulling it failed too: {failed.message}") from None
    return _pull_for_run(store, args)


def _pull_for_run(store: Store, args: argparse.Namespace):  # noqa: ANN202
    from layerfs.registry.pull import pull
    from layerfs.registry.reference import parse_remote

    with terminate_as_interrupt(), progress_for_terminal(False) as progress:
        image, _ = pull(store, parse_remote(args.image), access_from(args), progress)
    return image


def cmd_pull(store: Store, args: argparse.Namespace) -> None:
    from layerfs.registry.manifests import parse_platform
    from layerfs.registry.pull import pull
    from layerfs.registry.reference import parse_remote

    ref = parse_remote(args.ref)
    platform = parse_platform(args.platform) if args.platform else None
    with terminate_as_interrupt(), progress_for_terminal(args.quiet) as progress:
        image, name = pull(store, ref, access_from(args), progress, platform=platform, jobs=args.jobs)
    if args.quiet:
        print(image.id)
    else:
        print(f"Pulled image: {name or f'{ref.name}@{image.digest}'} ({image.id})")


def cmd_push(store: Store, args: argparse.Namespace) -> None:
    from layerfs.image.catalog import Catalog
    from layerfs.registry.push import push
    from layerfs.registry.reference import parse_remote

    image = Catalog(store).resolve(args.image)
    dest = parse_remote(args.dest or args.image)
    with terminate_as_interrupt(), progress_for_terminal(args.quiet) as progress:
        report = push(store, image, dest, access_from(args), progress, chunk_size=args.chunk_size,
                      jobs=args.jobs)
    if args.digestfile:
        args.digestfile.write_text(report.digest)
    if args.quiet:
        print(report.digest)
        return
    blobs = "blob" if len(report.uploaded) == 1 else "blobs"
    print(f"Pushed {dest} ({report.digest}): {len(report.uploaded)} {blobs} uploaded, "
          f"{len(report.mounted)} mounted, {len(report.skipped)} already there")


def _read_password(args: argparse.Namespace) -> str:
    if args.password is not None:
        if args.password_stdin:
            raise BadInput("give -p or --password-stdin, not both")
        return args.password
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise BadInput("no password: give -p, or --password-stdin to read it from standard input")
    return getpass.getpass("Password: ")


def cmd_login(store: Store | None, args: argparse.Namespace) -> None:
    from layerfs.registry import credentials
    from layerfs.registry.login import check_login
    from layerfs.registry.reference import normalize_registry

    registry = normalize_registry(args.registry)
    if args.get_login:
        found = credentials.lookup(registry, "", args.authfile)
        if found is None:
            raise LayerfsError(f"not logged in to {registry}")
        print(found.username)
        return
    username = args.username
    if not username:
        if args.password_stdin or not sys.stdin.isatty():
            raise BadInput("no user name: give -u USER")
        username = input("Username: ").strip()
    creds = credentials.Credentials(username, _read_password(args))
    check_login(registry, creds, access_from(args))
    path = credentials.store(registry, creds, args.authfile)
    print(f"Login Succeeded! (credentials in {path})")


def cmd_logout(store: Store | None, args: argparse.Namespace) -> None:
    from layerfs.registry import credentials
    from layerfs.registry.reference import normalize_registry

    if args.all == bool(args.registry):
        args.parser.error("give REGISTRY, or --all")
    registry = None if args.all else normalize_registry(args.registry)
    changed = credentials.remove(registry, args.authfile)
    if args.all:
        print("Removed login credentials for all registries")
    elif not changed:
        raise LayerfsError(f"not logged in to {registry}")
    else:
        print(f"Removed login credentials for {registry}")


def cmd_tags(store: Store | None, args: argparse.Namespace) -> None:
    from layerfs.registry.remote import list_tags
    from layerfs.registry.reference import parse_remote

    if not args.ref.startswith("docker://"):
        raise BadInput(f"tags takes docker://NAME, not {args.ref!r}")
    ref = parse_remote(args.ref, default_tag=False)
    if ref.tag or ref.digest:
        raise BadInput(f"tags takes a repository without a tag or digest, not {args.ref!r}")
    tags = list_tags(ref, access_from(args))
    if args.json:
        print_json({"Repository": ref.name, "Tags": tags})
    else:
        for tag in tags:
            print(tag)


def inspect_remote(args: argparse.Namespace) -> None:
    """`inspect docker://REF`: skopeo inspect's document, or --raw / --config."""
    from layerfs.registry.manifests import parse_platform
    from layerfs.registry.reference import parse_remote
    from layerfs.registry.remote import remote_image, skopeo_inspect

    ref = parse_remote(args.ref)
    platform = parse_platform(args.platform) if args.platform else None
    access = access_from(args)
    resolved, tags = remote_image(ref, access, platform, with_tags=not (args.raw or args.config))
    if args.raw:
        sys.stdout.write_bytes((resolved.index or resolved.manifest).data)  # type: ignore[attr-defined]
        return
    if args.config:
        print_json(json.loads(resolved.config))
        return
    print_json(skopeo_inspect(resolved, tags))
