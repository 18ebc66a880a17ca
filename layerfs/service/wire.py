"""The service's wire protocol: small messages over a unix stream socket.

Each message is a 4-byte big-endian length and that many bytes of a dict in
marshal's format: both ends are the same Python (the client starts the service
with its own interpreter), marshal costs no import, where json's would be a
tenth of the client's time, and the peer is checked to be this user before
anything is read. The
request that runs a command carries the caller's standard streams as file
descriptors (SCM_RIGHTS) on its first byte, so the command reads and writes the
caller's own terminal, pipes and files, exactly as it would in-process.

Messages, client to service:
  {"run": ARGV, "cwd", "env", "umask", "fds": [0, 1, 2 that are open], "root", "mntns"}
  {"control": "status" | "stop"}
service to client:
  {"pid": WORKER}       the command runs in that process (signals go there)
  {"exit": CODE}        it ended with CODE
  {"signal": N}         it was killed by signal N
  {"fallback": WHY}     the service cannot run it: run it in-process
  {"status": {...}}     the answer to a control request
"""

from __future__ import annotations

import marshal
import os
import socket
import struct

_LENGTH = struct.Struct(">I")
MAX_MESSAGE = 16 << 20  # an environment is large at most in the hundreds of KiB
MAX_FDS = 3


class WireError(Exception):
    """The other side sent what is not a message: not our peer, or it died midway."""


def send(sock: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    data = marshal.dumps(message)
    frame = _LENGTH.pack(len(data)) + data
    if fds:
        sent = socket.send_fds(sock, [frame], fds)
        frame = frame[sent:]
    if frame:
        sock.sendall(frame)


def receive(sock: socket.socket) -> tuple[dict, list[int]] | None:
    """The next message and the descriptors sent with it; None at a clean end of stream."""
    head, fds, _flags, _address = socket.recv_fds(sock, _LENGTH.size, MAX_FDS)
    if not head:
        return None
    try:
        head += _exactly(sock, _LENGTH.size - len(head))
        (length,) = _LENGTH.unpack(head)
        if length > MAX_MESSAGE:
            raise WireError(f"a message of {length} bytes")
        message = marshal.loads(_exactly(sock, length))
        if not isinstance(message, dict):
            raise WireError("a message that is not an object")
    except (WireError, ValueError, EOFError, TypeError):
        for fd in fds:
            _close(fd)
        raise WireError("not a layerfs service message") from None
    return message, fds


def _exactly(sock: socket.socket, count: int) -> bytes:
    chunks = []
    while count:
        chunk = sock.recv(count)
        if not chunk:
            raise WireError("the stream ended inside a message")
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end, from the kernel (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


def mount_namespace() -> str:
    """This process's mount namespace: a command must run in its caller's, where the
    mounts it makes or names are."""
    try:
        return os.readlink("/proc/self/ns/mnt")
    except OSError:
        return ""
