"""WAL archiving to the artifact store, for point-in-time recovery of the embedded server.

PostgreSQL's `archive_command` runs as the server's own user (an unprivileged system user when
KIKI runs as root), which may not be able to run KIKI's Python or hold the store's
credentials. So the server only copies each finished segment into a local spool folder (plain
`cp`, atomically renamed), and KIKI's own process ships the spool to the store under `wal/`
(`ship`, every few seconds in `kiki up`, or `kiki db archive-wal`). A recovery downloads the
archived segments first and replays them with a `cp` restore_command.
"""

from __future__ import annotations

import logging
import re
import shlex
import threading
from pathlib import Path

from kiki.artifacts import ArtifactStore

WAL = "wal"
SHIP_INTERVAL_S = 5.0
logger = logging.getLogger("kiki.wal")
# Segments, timeline histories, backup labels and a partial segment at a timeline switch.
_NAME = re.compile(r"^[0-9A-F]{8}(?:[0-9A-F]{16}(?:\.partial|\.[0-9A-F]{8}\.backup)?|\.history)$")


def archive_command(spool: Path) -> str:
    """Copy %p into the spool as %f, whole or not at all; an already archived segment with the
    same bytes counts as done (PostgreSQL may retry one it archived before a crash)."""
    d = shlex.quote(str(spool))
    return (
        f"if [ -f {d}/%f ]; then cmp -s %p {d}/%f; "
        f"else cp %p {d}/%f.part && mv {d}/%f.part {d}/%f; fi"
    )


def restore_command(folder: Path) -> str:
    return f"cp {shlex.quote(str(folder))}/%f %p"


def ship(spool: Path, store: ArtifactStore) -> list[str]:
    """Upload every finished file of the spool to `wal/` and remove it; the names shipped."""
    shipped = []
    for path in sorted(spool.iterdir()) if spool.is_dir() else []:
        if not _NAME.match(path.name):
            continue  # a .part copy still being written, or not PostgreSQL's
        store.put_bytes(f"{WAL}/{path.name}", path.read_bytes())
        path.unlink()
        shipped.append(path.name)
    return shipped


def fetch_all(store: ArtifactStore, into: Path) -> int:
    """Download every archived WAL file into `into`; how many."""
    into.mkdir(parents=True, exist_ok=True)
    names = [n for n in store.names(WAL) if _NAME.match(n)]
    for name in names:
        (into / name).write_bytes(store.get_bytes(store.url_of(f"{WAL}/{name}")))
    return len(names)


class WalShipper:
    """Ships the spool every few seconds in a daemon thread (`kiki up`), and once more at
    `stop()`. A failed upload is logged and retried next round: the spool keeps the file."""

    def __init__(self, spool: Path, store: ArtifactStore) -> None:
        self.spool, self.store = spool, store
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kiki-wal-shipper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        while True:
            stopping = self._stop.wait(SHIP_INTERVAL_S)
            try:
                ship(self.spool, self.store)
            except Exception:
                logger.exception("WAL shipping failed; retrying in %s s", SHIP_INTERVAL_S)
            if stopping:
                return
