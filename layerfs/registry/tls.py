"""TLS for registries, configured where containers-certs.d(5) and docker put it.

For a registry HOST[:PORT], the directory `--cert-dir DIR`, else the first of
~/.config/containers/certs.d/HOST[:PORT] (non-root users),
/etc/containers/certs.d/HOST[:PORT] and /etc/docker/certs.d/HOST[:PORT] that
exists, adds its `*.crt` files as trusted CAs (beside the system's) and its
`NAME.cert` + `NAME.key` pairs as client certificates. `--tls-verify=false`
turns verification off and lets a plain-HTTP registry be used, as podman's does.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from layerfs.errors import BadInput


def _cert_dirs(host: str) -> list[Path]:
    dirs = []
    if os.geteuid() != 0:
        home = Path(os.environ.get("HOME") or os.path.expanduser("~"))
        dirs.append(home / ".config" / "containers" / "certs.d")
    dirs += [Path("/etc/containers/certs.d"), Path("/etc/docker/certs.d")]
    return [d / host for d in dirs]


def ssl_context(host: str, verify: bool, cert_dir: Path | None) -> ssl.SSLContext:
    """The context for HTTPS to `host`; one line on a bad certificate file."""
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_dir is not None and not cert_dir.is_dir():
        raise BadInput(f"--cert-dir {cert_dir} is not a directory")
    found = [cert_dir] if cert_dir is not None else [d for d in _cert_dirs(host) if d.is_dir()][:1]
    for directory in found:
        try:
            for path in sorted(directory.iterdir()):
                if path.suffix == ".crt":
                    context.load_verify_locations(cafile=str(path))
                elif path.suffix == ".cert":
                    key = path.with_suffix(".key")
                    if not key.exists():
                        raise BadInput(f"client certificate {path} has no key {key.name} beside it")
                    context.load_cert_chain(str(path), str(key))
        except ssl.SSLError as e:
            raise BadInput(f"cannot use the certificates in {directory}: {e.reason or e}") from None
        except OSError as e:
            raise BadInput(f"cannot read the certificates in {directory}: {e.strerror}") from None
    return context
