"""Import sources named skopeo-style: `TRANSPORT:DETAILS`."""

from __future__ import annotations

from pathlib import Path

from layerfs.errors import BadInput, NotFound
from layerfs.image.source import DirFiles, Files, SourceImage, TarFiles
from layerfs.image.transports.docker_archive import docker_archive_images, docker_archive_source
from layerfs.image.transports.oci import oci_images, oci_source
from layerfs.image.transports.rootfs import dir_source, tar_source
from layerfs.layer.generate import Skip

TRANSPORTS = ("oci", "oci-archive", "docker-archive", "dir", "tar")


def _split_ref(details: str) -> tuple[Path, str | None]:
    """`PATH[:REF]`, split at the first colon as skopeo does."""
    path, sep, ref = details.partition(":")
    return Path(path), (ref if sep else None)


def open_source(text: str, skip: Skip | None = None) -> SourceImage:
    """Turn a SOURCE argument into a SourceImage, or fail with one clear line.

    `skip`, for a `dir:` source only, is told of each path it leaves out because it
    cannot be read (without it, such a path fails the import)."""
    transport, sep, details = text.partition(":")
    if not sep or transport not in TRANSPORTS:
        raise BadInput(f"unknown source {text!r}: use one of "
                       + ", ".join(f"{t}:..." for t in TRANSPORTS))
    if not details:
        raise BadInput(f"source {text!r} names no path")
    if skip is not None and transport != "dir":
        raise BadInput(f"--skip-unreadable applies to dir: sources only, not to {transport}:")
    if transport in ("dir", "tar"):
        path = Path(details)
        if not path.exists():
            raise NotFound(f"{path} does not exist")
        return dir_source(path, skip) if transport == "dir" else tar_source(path)
    path, ref = _split_ref(details)
    if not path.exists():
        raise NotFound(f"{path} does not exist")
    if transport == "oci":
        if not path.is_dir():
            raise BadInput(f"{path} is not a directory (oci: takes an OCI layout directory)")
        return oci_source(DirFiles(path), ref)
    files = TarFiles(path)
    if transport == "oci-archive":
        return oci_source(files, ref)
    return docker_archive_source(files, ref)


def archive_images(files: Files) -> list[tuple[SourceImage, list[str]]]:
    """Every image of a docker-archive or an oci-archive, told apart by what it holds (a
    docker 25+ archive is both: its manifest.json is read), each with all its names.
    The sources share `files`; the caller closes it once all are imported."""
    if files.exists("manifest.json"):
        return docker_archive_images(files)
    if files.exists("index.json") and files.exists("oci-layout"):
        return oci_images(files)
    raise BadInput(f"{files.label} is neither a docker-archive (it has no manifest.json) nor an "
                   "oci-archive (no index.json and oci-layout)")
