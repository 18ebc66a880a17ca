"""What the store knows about blobs beyond their bytes, as containers/image's
blob-info cache keeps it: which uncompressed layer (diff_id) a verified compressed
blob holds, and in which registry repositories a blob is known to exist.

Pairs are written only after a blob was verified on the way in (pull) or out
(push), so the cache never claims what no digest check saw. Push asks it where a
blob already lives in the target registry, to skip it or to mount it across
repositories instead of uploading it; pull records where each blob came from.
It is a SQLite file in the store's cache/ directory: safe under the parallel
threads of one pull and under concurrent layerfs processes, and losing it costs
only re-checks.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from layerfs.store.layout import Store

FILE = "blob-info.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS layers (digest TEXT PRIMARY KEY, diff_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS locations (digest TEXT NOT NULL, registry TEXT NOT NULL,
    repository TEXT NOT NULL, seen REAL NOT NULL DEFAULT (julianday('now')),
    PRIMARY KEY (digest, registry, repository));
"""


class BlobInfo:
    def __init__(self, store: Store) -> None:
        self._path: Path = store.cache / FILE
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, contextlib.closing(sqlite3.connect(self._path, timeout=30)) as db:
            db.executescript(_SCHEMA)
            with db:
                yield db

    def record(self, layers: list[tuple[str, str]], locations: list[tuple[str, str, str]]) -> None:
        """Remember (digest, diff_id) pairs and (digest, registry, repository) sightings,
        in one transaction: a pull or push records all its blobs at once."""
        with self._db() as db:
            db.executemany("INSERT OR REPLACE INTO layers VALUES (?, ?)", layers)
            db.executemany("INSERT OR REPLACE INTO locations (digest, registry, repository) VALUES (?, ?, ?)",
                           locations)

    def locations(self, digest: str, registry: str) -> list[str]:
        """Repositories of `registry` that had `digest`, most recently seen first."""
        with self._db() as db:
            rows = db.execute("SELECT repository FROM locations WHERE digest = ? AND registry = ? "
                              "ORDER BY seen DESC", (digest, registry)).fetchall()
        return [r[0] for r in rows]
