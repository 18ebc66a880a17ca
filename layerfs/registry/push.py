"""Push a stored image to a registry: blobs first, the manifest last.

Each blob (layers, then the config) is pushed at most once and only when the
target repository lacks it: a HEAD says whether it is there; where the blob-info
cache knows another repository of the same registry holding it, it is mounted
across repositories (one token carrying pull on the source and push,pull on the
target, as the spec needs) instead of uploaded; otherwise it is uploaded in one
PUT or, with a chunk size, in PATCHes. The manifest goes up byte for byte only
when every blob is in place, so a registry never holds a manifest naming a blob
it lacks, and the pushed image keeps its digest.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from layerfs.errors import LayerfsError
from layerfs.image.catalog import Image
from layerfs.image.manifest import OCI_MANIFEST, Descriptor
from layerfs.progress import Progress, Task
from layerfs.registry.auth import AuthError, scope
from layerfs.registry.blobinfo import BlobInfo
from layerfs.registry.client import Access, Registry, RegistryError
from layerfs.registry.reference import RemoteReference
from layerfs.store.layout import Store

CHUNK = 1 << 20


@dataclass
class PushReport:
    """The pushed manifest's digest, and each blob's fate: skipped (the repository
    had it), mounted from another repository, or uploaded."""

    digest: str
    skipped: list[str] = field(default_factory=list)
    mounted: list[str] = field(default_factory=list)
    uploaded: list[str] = field(default_factory=list)


@dataclass
class _Pusher:
    store: Store
    registry: Registry
    dest: RemoteReference
    info: BlobInfo
    chunk_size: int | None

    @property
    def scopes(self) -> tuple[str, ...]:
        return (scope(self.dest.repository, "pull", "push"),)

    def push_blob(self, blob: Descriptor, task: Task) -> str:
        """Make `blob` present in the target repository; returns how."""
        path = f"/v2/{self.dest.repository}/blobs/{blob.digest}"
        response = self.registry.send("HEAD", path, self.scopes)
        response.close()
        if response.status_code == 200:
            task.advance(blob.size)
            return "skipped"
        if response.status_code != 404:
            raise self.registry.fail(response, f"blob {blob.digest[:19]} of {self.dest.name}")
        location = None
        for source in self.info.locations(blob.digest, self.dest.registry):
            if source == self.dest.repository:
                continue
            location = self._mount(blob, source)
            if location is None:
                task.advance(blob.size)
                return "mounted"
            break  # the registry opened an upload instead: use it
        self._upload(blob, location, task)
        return "uploaded"

    def _mount(self, blob: Descriptor, source: str) -> str | None:
        """Try a cross-repository mount; None if mounted, else the upload it opened."""
        scopes = (scope(source, "pull"), *self.scopes)
        if self.registry.auth.granted(scopes, scopes[0]) is False:
            return self._start_upload()  # no pull on the source for us: plain upload
        query = urlencode({"mount": blob.digest, "from": source})
        response = self.registry.send("POST", f"/v2/{self.dest.repository}/blobs/uploads/?{query}", scopes)
        response.close()
        if response.status_code == 201:
            return None
        if response.status_code == 202 and "location" in response.headers:
            return response.headers["location"]
        raise self.registry.fail(response, f"mounting blob {blob.digest[:19]} into {self.dest.name}")

    def _start_upload(self) -> str:
        response = self.registry.send("POST", f"/v2/{self.dest.repository}/blobs/uploads/", self.scopes)
        response.close()
        if response.status_code != 202 or "location" not in response.headers:
            raise self._refused(response, f"starting an upload to {self.dest.name}")
        return response.headers["location"]

    def _refused(self, response, what: str) -> LayerfsError:  # noqa: ANN001 - httpx.Response
        if response.status_code in (401, 403) and self.registry.auth.granted(self.scopes, self.scopes[0]) is False:
            return AuthError(f"{self.dest.registry} did not grant push on {self.dest.repository} "
                             f"(its token server gave less than asked): check your login and rights")
        return self.registry.fail(response, what)

    def _upload(self, blob: Descriptor, location: str | None, task: Task) -> None:
        location = location or self._start_upload()
        blob_path = self.store.blob_path(blob.digest)
        if self.chunk_size and blob.size > self.chunk_size:
            offset = 0
            while offset < blob.size:
                length = min(self.chunk_size, blob.size - offset)
                headers = {"Content-Type": "application/octet-stream",
                           "Content-Range": f"{offset}-{offset + length - 1}",
                           "Content-Length": str(length)}
                response = self.registry.send("PATCH", self.registry.url(location), self.scopes, headers=headers,
                                              content=self._part(blob_path, offset, length, task))
                response.close()
                if response.status_code != 202 or "location" not in response.headers:
                    raise self._refused(response, f"uploading blob {blob.digest[:19]} to {self.dest.name}")
                location = response.headers["location"]
                offset += length
            body: Callable[[], Iterator[bytes]] | bytes = b""
        else:
            body = self._part(blob_path, 0, blob.size, task)
        separator = "&" if "?" in location else "?"
        url = self.registry.url(location) + separator + urlencode({"digest": blob.digest})
        headers = {"Content-Type": "application/octet-stream",
                   "Content-Length": str(0 if body == b"" else blob.size)}
        response = self.registry.send("PUT", url, self.scopes, headers=headers, content=body)
        response.close()
        if response.status_code != 201:
            raise self._refused(response, f"uploading blob {blob.digest[:19]} to {self.dest.name}")

    def _part(self, path: Path, offset: int, length: int, task: Task) -> Callable[[], Iterator[bytes]]:
        """A body that can be sent again (a retry re-reads the file), stopping on cancel."""
        def body() -> Iterator[bytes]:
            with open(path, "rb") as f:
                f.seek(offset)
                left = length
                while left:
                    self.registry.check_cancel()
                    data = f.read(min(CHUNK, left))
                    if not data:
                        raise LayerfsError(f"{path} is shorter than its descriptor says")
                    left -= len(data)
                    task.advance(len(data))
                    yield data
        return body

    def push_manifest(self, data: bytes, media_type: str, digest: str) -> None:
        reference = self.dest.digest or self.dest.tag or "latest"
        response = self.registry.send("PUT", f"/v2/{self.dest.repository}/manifests/{reference}", self.scopes,
                                      headers={"Content-Type": media_type}, content=data)
        response.close()
        if response.status_code != 201:
            raise self._refused(response, f"pushing the manifest of {self.dest}")
        said = response.headers.get("docker-content-digest")
        if said and said != digest:
            raise RegistryError(f"{self.dest.registry} stored the manifest as {said}, not {digest}")


def push(store: Store, image: Image, dest: RemoteReference, access: Access, progress: Progress, *,
         chunk_size: int | None = None, jobs: int = 6) -> PushReport:
    """Push `image` to `dest`; returns what happened to each blob and the manifest digest."""
    cancel = threading.Event()
    registry = Registry(dest.api_host, dest.repository, access, cancel)
    info = BlobInfo(store)
    pusher = _Pusher(store, registry, dest, info, chunk_size)
    blobs = [*image.manifest.layers, image.manifest.config]
    report = PushReport(image.digest)
    try:
        tasks = [progress.concurrent(f"blob {b.digest[7:19]}", b.size) for b in blobs]
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="push") as pool:
            futures = [pool.submit(pusher.push_blob, blob, task) for blob, task in zip(blobs, tasks)]
            try:
                outcomes = [f.result() for f in futures]
            except BaseException:
                cancel.set()
                raise
        for blob, task, outcome in zip(blobs, tasks, outcomes):
            task.done()
            getattr(report, outcome).append(blob.digest)
        info.record([], [(blob.digest, dest.registry, dest.repository) for blob in blobs])
        data = store.read_blob(image.digest)
        media_type = image.manifest_doc.get("mediaType") or image.manifest.media_type or OCI_MANIFEST
        pusher.push_manifest(data, media_type, image.digest)
    finally:
        registry.close()
    return report
