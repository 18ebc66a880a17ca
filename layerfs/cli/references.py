"""REF arguments of the inspection commands: an image of the store, an image as it was
after one of its layers, or an image elsewhere that is imported first.

    NAME[:TAG], NAME@sha256:..., an id or a unique id prefix   an image of the store
    REF@N                                                      REF after its layer N (1 = base)
    oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:REF]
                                                               imported first, once

A transport reference is imported as `layerfs import` would import it, saying so in
one line on stderr; when the store already holds that image (the same manifest or the
same config digest) nothing is imported and nothing is said, and finding that out
reads only the source's manifest and config, never its layers. A name in the store
wins over a transport of the same spelling (an image named `oci` tagged `v1`).
`dir:` and `tar:` sources are not taken: they make a new image on every import.
"""

from __future__ import annotations

import argparse
import copy
import sys
from dataclasses import dataclass
from typing import Any

from layerfs.cli.progress import progress_for_terminal
from layerfs.container.records import Containers
from layerfs.errors import BadInput, LayerfsError, NotFound
from layerfs.image.catalog import Catalog, Image, reference_name
from layerfs.image.importer import import_image
from layerfs.image.manifest import Descriptor
from layerfs.image.source import SourceImage
from layerfs.image.transports import TRANSPORTS, open_source
from layerfs.store.digest import sha256_of
from layerfs.store.layout import Store

NEW_EACH_TIME = ("dir", "tar")  # transports that make a new image on every import
REF_HELP = ("an image: name[:tag], name@sha256:DIGEST or an id (prefix); REF@N for the image as "
            "it was after its layer N (1 is the base, as `layerfs inspect` numbers them); or "
            "oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:REF], imported into the "
            "store first (once: the same image is found there the next time)")


@dataclass
class ImageAt:
    """An image, or the image as it was after its layer `upto` (1-based)."""

    image: Image
    upto: int | None = None
    given: str = ""  # the reference as the user gave it, without "@N"

    @property
    def diff_ids(self) -> list[str]:
        """The layer chain to merge: all of the image's, or its first `upto`."""
        ids = self.image.diff_ids
        return ids if self.upto is None else ids[:self.upto]

    @property
    def config(self) -> dict[str, Any]:
        """The image's config, or for REF@N the config of the image after layer N: its
        history up to that layer (and the steps that made no layer before the next one),
        its rootfs those N layers, created when the last step kept was."""
        if self.upto is None:
            return self.image.config
        config = copy.deepcopy(self.image.config)
        steps, layers = [], 0
        for step in config.get("history") or []:
            if isinstance(step, dict) and not step.get("empty_layer"):
                if layers == self.upto:
                    break
                layers += 1
            steps.append(step)
        if "history" in config:
            config["history"] = steps
            created = next((s.get("created") for s in reversed(steps) if isinstance(s, dict) and s.get("created")),
                           None)
            if created:
                config["created"] = created
        config.setdefault("rootfs", {})["diff_ids"] = self.diff_ids
        return config

    @property
    def name(self) -> str:
        """What to call the image in output: the reference as the user gave it when it
        names the image (a name or a transport reference), else the image's first name,
        else its short id."""
        if self.given and _plain(self.given):
            if _is_transport(self.given):
                return self.given
            try:
                if reference_name(self.given) in self.image.names:
                    return self.given
            except LayerfsError:
                pass
        return self.image.names[0] if self.image.names else self.image.short_id

    @property
    def label(self) -> str:
        """`name`, with "@N" when this is the image after its layer N."""
        return self.name if self.upto is None else f"{self.name}@{self.upto}"

    def layer(self, number: int) -> tuple[Descriptor, str]:
        """(the manifest's descriptor, the diff_id) of layer `number` (1-based) of the
        layers in view; BadInput, naming the valid range, for any other number."""
        _check_range(number, len(self.diff_ids), self.label, f"layer {number}")
        return self.image.manifest.layers[number - 1], self.diff_ids[number - 1]


def layer_number(text: str) -> int:
    """argparse type of a layer number: digits only (the range is checked against the
    image, as a usage error it could not be)."""
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a layer number (1 is the base layer)")
    return int(text)


def image_argument(store: Store, text: str) -> ImageAt:
    """The image a REF argument means (see the module's doc), or a one-line error."""
    base, upto = split_layer_number(text)
    if not base:
        raise BadInput(f"invalid reference {text!r}: give an image before @N")
    image = _resolve(store, base)
    at = ImageAt(image, None, base)
    if upto is not None:
        _check_range(upto, len(image.diff_ids), at.name, text)
        at.upto = upto
    return at


def inspected_image(store: Store, text: str, command: str) -> ImageAt:
    """`image_argument` for a command that takes only images: a container's name is
    told apart from an unknown reference, with what works for a container instead."""
    try:
        return image_argument(store, text)
    except NotFound as unknown:
        try:
            container = Containers(store).resolve(text)
        except NotFound:
            raise unknown from None
        raise BadInput(f"{text} is a container, and {command} takes an image: `layerfs diff {text}` lists "
                       f"what the container changed in its image {container.image_ref}") from None


def split_layer_number(text: str) -> tuple[str, int | None]:
    """`REF@N` -> (REF, N); anything else (`name@sha256:...` included) -> (text, None)."""
    head, sep, tail = text.rpartition("@")
    if sep and tail.isascii() and tail.isdigit():
        return head, int(tail)
    return text, None


def _check_range(number: int, count: int, what: str, asked: str) -> None:
    if count == 0:
        raise BadInput(f"{asked}: {what} has no layers")
    if not 1 <= number <= count:
        layers = "1 layer: the only layer number is 1" if count == 1 else \
            f"{count} layers: give a layer number from 1 (the base) to {count}"
        raise BadInput(f"{asked}: {what} has {layers}")


def _plain(text: str) -> bool:
    """Printable ASCII without "," or "\\": safe as a FUSE fsname and as one word of output."""
    return text.isascii() and text.isprintable() and "," not in text and "\\" not in text


def _is_transport(text: str) -> bool:
    transport, sep, _ = text.partition(":")
    return bool(sep) and transport in TRANSPORTS


def _resolve(store: Store, text: str) -> Image:
    catalog = Catalog(store)
    try:
        return catalog.resolve(text)
    except (NotFound, BadInput):
        if not _is_transport(text):
            raise
    return _from_transport(store, catalog, text)


def _from_transport(store: Store, catalog: Catalog, text: str) -> Image:
    transport = text.partition(":")[0]
    if transport in NEW_EACH_TIME:
        raise BadInput(f"{text!r}: a {transport}: source becomes a new image on every import; "
                       f"import it once (`layerfs import {text} NAME`) and give NAME instead")
    source = open_source(text)
    try:
        stored = _stored_copy(catalog, source)
    except BaseException:
        source.close()
        raise
    if stored is not None:
        source.close()
        return stored
    name, note = _name_for(catalog, source)
    source.name = name
    if name is None and source.config is not None:  # how to find it again, and name it
        short = sha256_of(source.config).removeprefix("sha256:")[:12]
        note = f"{note or ' without a name'}, as image {short} (`layerfs tag {short} NAME` names it)"
    print(f"layerfs: importing {text} into the store{note}", file=sys.stderr)
    with progress_for_terminal(False) as progress:
        image, _ = import_image(store, source, name, progress)  # closes the source
    return image


def _stored_copy(catalog: Catalog, source: SourceImage) -> Image | None:
    """The image of the store that `source` holds, known by its manifest's digest or,
    failing that, its config's (the image id: the same config lists the same layers).
    Only the documents the source opened with are hashed; no layer is read."""
    images = catalog.images()
    if source.manifest is not None:
        digest = sha256_of(source.manifest)
        for image in images:
            if image.digest == digest:
                return image
    if source.config is not None:
        config = sha256_of(source.config)
        for image in images:
            if image.id == config:
                return image
    return None


def _name_for(catalog: Catalog, source: SourceImage) -> tuple[str | None, str]:
    """The name to import under, and how to say it: the source's own name, unless that
    name is not valid here or belongs to another image of the store (an inspection
    must not move a tag away from the image it names)."""
    if not source.name:
        return None, ""
    try:
        name = reference_name(source.name)
    except LayerfsError:
        return None, f" without a name ({source.name!r} is not a valid image name)"
    for image in catalog.images():
        if name in image.names:
            return None, f" without a name ({name} names another image)"
    return name, f" as {name}"
