"""What a container's process is: the image config merged with `docker run`'s options.

An image says how it wants to be run (Entrypoint, Cmd, Env, WorkingDir, User,
StopSignal); the command line may override each part. Users expect the rules they
know from docker and podman, down to the corners (`--entrypoint ""`, `-e KEY`
without a value, an env file's comments), so they are applied here as those tools
apply them, in plain functions over data: no namespace or mount is needed to get
them right, and the result is stored in the container's record so that a restart
runs the same process without the image at hand.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from layerfs.errors import BadInput, LayerfsError

# What docker (oci.DefaultPathEnv) and podman (containers/common's default env) give
# a container whose image and options set no PATH.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# moby/sys/signal's Linux table. The real-time range is moby's fixed 34..64 (glibc
# keeps 32 and 33 for itself), not whatever this libc reports.
_SIGRTMIN, _SIGRTMAX = 34, 64
_SIGNALS: dict[str, int] = {
    name: int(getattr(signal, "SIG" + name)) for name in (
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ")
}
_SIGNALS["RTMIN"], _SIGNALS["RTMAX"] = _SIGRTMIN, _SIGRTMAX
_SIGNALS.update({f"RTMIN+{n}": _SIGRTMIN + n for n in range(1, 16)})
_SIGNALS.update({f"RTMAX-{n}": _SIGRTMAX - n for n in range(1, 15)})

_GO_INT = re.compile(r"[+-]?[0-9]+")   # what Go's strconv.Atoi reads as a number


@dataclass(frozen=True)
class ProcessSpec:
    """Everything a container start needs to know about its first process."""

    argv: list[str]
    env: list[str]                       # "KEY=VAL", one per key, in order of first mention
    cwd: str = "/"
    user: str = ""                       # as given: "", "name", "uid", "name:group", "uid:gid"
    stop_signal: int = int(signal.SIGTERM)
    volumes: list[str] = field(default_factory=list)         # container paths, sorted
    exposed_ports: list[str] = field(default_factory=list)   # "80/tcp", sorted

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ProcessSpec:
        return cls(**doc)


def parse_signal(text: str) -> int:
    """A signal number from "SIGTERM", "term", "15" or "SIGRTMIN+3", as moby's ParseSignal
    reads them; moby takes any non-zero number, here it must also be a Linux signal."""
    if _GO_INT.fullmatch(text):
        number = int(text)
        if not 1 <= number <= _SIGRTMAX:
            raise BadInput(f"invalid signal {text!r}: signal numbers go from 1 to {_SIGRTMAX}")
        return number
    number = _SIGNALS.get(text.upper().removeprefix("SIG"))
    if number is None:
        raise BadInput(f"invalid signal {text!r}: give a name such as SIGTERM, or a number")
    return number


def process_spec(image_config: Mapping[str, Any], command: Sequence[str] | None,
                 entrypoint: str | None, env: Sequence[str], env_files: Sequence[Path],
                 workdir: str | None, user: str | None,
                 host_env: Mapping[str, str], require_command: bool = True) -> ProcessSpec:
    """The process `docker run [--entrypoint E] [-e ...] [--env-file ...] [-w W] [-u U]
    IMAGE [COMMAND...]` starts, from the image config's "config" object.

    `host_env` is the caller's environment, which `-e KEY` and a bare `KEY` line of an
    env file take their value from. Without `require_command` (`create`: a container
    is also a writable layer to mount) no command at all is an empty argv, refused
    only when the container starts."""
    image_env = _image_env(image_config)
    from_files = [entry for path in env_files for entry in read_env_file(path, host_env)]
    from_options = [entry for value in env for entry in _env_option(value, host_env)]
    cwd = workdir or _string(image_config, "WorkingDir") or "/"
    if not cwd.startswith("/"):
        where = "-w" if workdir else "the image's WorkingDir"
        raise BadInput(f"{where} {cwd!r} is not an absolute path")
    stop_signal = _string(image_config, "StopSignal")
    return ProcessSpec(
        argv=_argv(image_config, command, entrypoint, require_command),
        env=_with_path(merge_env(image_env + from_files + from_options)),
        cwd=cwd,
        user=user or _string(image_config, "User"),
        stop_signal=parse_signal(stop_signal) if stop_signal else int(signal.SIGTERM),
        volumes=_keys(image_config, "Volumes"),
        exposed_ports=_keys(image_config, "ExposedPorts"),
    )


def _argv(image_config: Mapping[str, Any], command: Sequence[str] | None,
          entrypoint: str | None, required: bool) -> list[str]:
    # podman's makeCommand (pkg/specgen/generate/oci.go), which moby's merge and
    # mergeAndVerifyConfig agree with: `--entrypoint X` (even X = "") replaces the
    # image's Entrypoint and drops its Cmd, so only the arguments given follow it; an
    # entrypoint of [""] (`--entrypoint ""`, or an image's) stands for none at all.
    if entrypoint is None:
        first = _strslice(image_config, "Entrypoint")
        rest = list(command or []) or _strslice(image_config, "Cmd")
    else:
        first, rest = [entrypoint], list(command or [])
    argv = ([] if first == [""] else first) + rest
    if argv or not required:
        return argv
    if entrypoint == "":
        raise LayerfsError('no command given: --entrypoint "" drops the image\'s Entrypoint '
                           "and Cmd, so name the command to run")
    raise LayerfsError("no command given and the image has neither Entrypoint nor Cmd")


def merge_env(entries: Sequence[str]) -> list[str]:
    """One "KEY=VAL" per key: a later entry's value replaces an earlier one's, in the
    earlier one's place."""
    merged: dict[str, str] = {}
    for entry in entries:
        key, _, value = entry.partition("=")
        merged[key] = value
    return [f"{key}={value}" for key, value in merged.items()]


def read_env_file(path: Path, host_env: Mapping[str, str]) -> list[str]:
    """An --env-file's variables, read as docker's CLI reads one (opts/file.go
    parseKeyValueFile): a line is KEY=VALUE, taken as written (no quotes, trailing
    blanks kept); leading blanks, empty lines and lines starting with # are skipped;
    a line KEY alone takes the caller's value, and is left out when there is none."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LayerfsError(f"cannot read the env file {str(path)!r}: {e.strerror}") from None
    entries = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        raw = raw.removesuffix(b"\r")
        if number == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        try:
            line = raw.decode("utf-8").lstrip()
        except UnicodeDecodeError:
            raise BadInput(f"env file {str(path)!r} line {number} is not UTF-8") from None
        if not line or line.startswith("#"):
            continue
        key, equals, _ = line.partition("=")
        if not key:
            raise BadInput(f"env file {str(path)!r} line {number} has no variable name: {line!r}")
        if " " in key or "\t" in key:
            raise BadInput(f"env file {str(path)!r} line {number}: variable {key!r} "
                           "contains whitespace")
        if equals:
            entries.append(line)
        elif key in host_env:
            entries.append(f"{key}={host_env[key]}")
    return entries


def _env_option(value: str, host_env: Mapping[str, str]) -> list[str]:
    # docker's opts.ValidateEnv: the name must not be empty, and KEY alone takes the
    # caller's value. An unset KEY is left out, as podman does; docker passes it on
    # bare, which its daemon reads as "unset", dropping the image's value too.
    key, equals, _ = value.partition("=")
    if not key:
        raise BadInput(f"invalid environment variable {value!r} for -e: give KEY=VALUE or KEY")
    if equals:
        return [value]
    return [f"{key}={host_env[key]}"] if key in host_env else []


def _with_path(env: list[str]) -> list[str]:
    if any(entry.startswith("PATH=") for entry in env):
        return env
    return [f"PATH={DEFAULT_PATH}", *env]


def _strslice(config: Mapping[str, Any], key: str) -> list[str]:
    # docker's strslice.StrSlice, which also reads a lone string as a one-element list.
    value = config.get(key)
    if isinstance(value, str):
        return [value]
    if value is None or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        return list(value or [])
    raise BadInput(f"the image config's {key} is not a list of strings: {value!r}")


def _image_env(config: Mapping[str, Any]) -> list[str]:
    value = config.get("Env")
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadInput(f"the image config's Env is not a list of strings: {value!r}")
    for entry in value:
        key, equals, _ = entry.partition("=")
        if not key or not equals:
            raise BadInput(f"the image config's Env holds {entry!r}, not KEY=VALUE")
    return value


def _string(config: Mapping[str, Any], key: str) -> str:
    value = config.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadInput(f"the image config's {key} is not a string: {value!r}")
    return value


def _keys(config: Mapping[str, Any], key: str) -> list[str]:
    value = config.get(key)
    if value is None:
        return []
    if not isinstance(value, dict):
        raise BadInput(f"the image config's {key} is not an object: {value!r}")
    return sorted(value)
