"""Names and ids for containers and volumes, as docker spells them."""

from __future__ import annotations

import os
import re

from layerfs.errors import BadInput

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def new_id() -> str:
    """A random 64-hex id (the first 12 digits are what tables show)."""
    return os.urandom(32).hex()


def check_name(name: str, what: str) -> str:
    if not _NAME.match(name):
        raise BadInput(f"invalid {what} name {name!r}: start with a letter or digit, "
                       "then letters, digits, '_', '.' or '-'")
    return name
