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
  {"run": ARGV, "cwd", "env", "umask", "fds": [0, 1, 2 that are open], "root", "mntns", "ids"}
  {"control": "status" | "stop"}
service to client:
  {"pid": WORKER}       the command runs in that process (signals go there)
  {"exit": CODE}        it ended with CODE
  {"signal": N}         it was killed by signal N
  {"fallback": WHY}     the service cannot run it: run it in-process
  {"status": {...}}     the answer to a control request
service to a spare worker (forked ahead of the request, see workers.py):
  {"request": REQUEST}  with the connection and the caller's streams as descriptors
worker to service, on the same channel, and the answer:
  {"detached": true}    the command is done; this process goes on with work it left
  {"ok": true}
"""

from __future__ import annotations

import marshal
import os

# The C modules under socket and struct: socket.py and signal.py import enum, and
# array collections, which together cost the client more than its own work.
import _socket
import _struct

_LENGTH = _struct.Struct(">I")
MAX_MESSAGE = 16 << 20  # an environment is large at most in the hundreds of KiB
MAX_FDS = 4  # the caller's three streams; from the service to a spare worker, the connection too


class WireError(Exception):
    """The other side sent what is not a message: not our peer, or it died midway."""


def send(sock: _socket.socket, message: dict, fds: list[int] | None = None) -> None:
    data = marshal.dumps(message)
    frame = _LENGTH.pack(len(data)) + data
    if fds:
        rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, _struct.pack(f"{len(fds)}i", *fds))]
        frame = frame[sock.sendmsg([frame], rights):]
    if frame:
        sock.sendall(frame)


def receive(sock: _socket.socket) -> tuple[dict, list[int]] | None:
    """The next message and the descriptors sent with it; None at a clean end of stream."""
    head, ancillary, _flags, _address = sock.recvmsg(_LENGTH.size, _socket.CMSG_SPACE(MAX_FDS * 4))
    fds = [fd for level, kind, data in ancillary
           if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS
           for fd in _struct.unpack(f"{len(data) // 4}i", data[:len(data) - len(data) % 4])]
    if not head:
        close_all(fds)
        return None
    try:
        head += _exactly(sock, _LENGTH.size - len(head))
        (length,) = _LENGTH.unpack(head)
        if length > MAX_MESSAGE:
            raise WireError(f"a message of {length} bytes")
        message = marshal.loads(_exactly(sock, length))
        if not isinstance(message, dict):
            raise WireError("a message that is not a dict")
    except (WireError, ValueError, EOFError, TypeError):
        close_all(fds)
        raise WireError("not a layerfs service message") from None
    return message, fds


def _exactly(sock: _socket.socket, count: int) -> bytes:
    chunks = []
    while count:
        chunk = sock.recv(count)
        if not chunk:
            raise WireError("the stream ended inside a message")
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def peer_uid(sock: _socket.socket) -> int:
    """The uid of the process at the other end, from the kernel (SO_PEERCRED)."""
    _pid, uid, _gid = _struct.unpack("3i", sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12))
    return uid


def mount_namespace() -> str:
    """This process's mount namespace: a command must run in its caller's, where the
    mounts it makes or names are."""
    try:
        return os.readlink("/proc/self/ns/mnt")
    except OSError:
        return ""


def identity() -> list:
    """The ids a command runs with besides the uid (SO_PEERCRED checks that): a worker
    has the service's, so a caller with other groups (after `newgrp`, or a group added
    since the service started) runs in-process."""
    return [os.getgid(), os.getegid(), sorted(os.getgroups())]
