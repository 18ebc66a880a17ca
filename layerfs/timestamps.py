"""Timestamps as OCI configs and docker records write them (RFC 3339, UTC, "Z")."""

from __future__ import annotations

import datetime


def now_rfc3339(precise: bool = False) -> str:
    """Now, to the second; `precise` keeps microseconds, so records made in one second order."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.isoformat(timespec="microseconds" if precise else "seconds").replace("+00:00", "Z")
