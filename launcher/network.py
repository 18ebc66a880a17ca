"""Networking a container can have without privileges: the host's, or none at all.

`--network none` is a network namespace of its own with only the loopback
interface, brought up here (a new namespace has it down), as podman does; it
costs no helper process and isolates completely. There is no rootless bridge
(slirp4netns, pasta): ports and outbound traffic need `--network host`.
"""

from __future__ import annotations

import fcntl
import socket
import struct

HOST, NONE = "host", "none"
MODES = (HOST, NONE)
_SIOCGIFFLAGS, _SIOCSIFFLAGS = 0x8913, 0x8914
_IFF_UP = 0x1
_IFREQ = struct.Struct("16sH14x")


def loopback_up() -> None:
    """Bring `lo` up in this network namespace (ioctl: no `ip` needed in the image)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = _IFREQ.pack(b"lo", 0)
        _name, flags = _IFREQ.unpack(fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, request))
        fcntl.ioctl(sock.fileno(), _SIOCSIFFLAGS, _IFREQ.pack(b"lo", flags | _IFF_UP))


def etc_files(hostname: str, network: str) -> dict[str, str]:
    """The contents of the container's /etc/hostname, /etc/hosts and /etc/resolv.conf:
    the host's name service on the host network, only localhost without one."""
    hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    resolv = ""
    if network == HOST:
        hosts = _read("/etc/hosts") or hosts
        resolv = _read("/etc/resolv.conf")
    return {"hostname": hostname + "\n", "hosts": hosts + f"127.0.1.1\t{hostname}\n", "resolv.conf": resolv}


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""
