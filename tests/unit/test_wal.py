"""WAL archiving's two halves without a server: the archive_command PostgreSQL runs (by the
shell, as it would), and the shipping of the spool to the artifact store."""

from __future__ import annotations

import subprocess
from pathlib import Path

from kiki.artifacts import ArtifactStore
from kiki.db.wal import WAL, WalShipper, archive_command, fetch_all, ship

SEGMENT = "000000010000000000000003"


def archive(spool: Path, source: Path, name: str) -> int:
    command = archive_command(spool).replace("%p", str(source)).replace("%f", name)
    return subprocess.run(["/bin/sh", "-c", command], check=False).returncode


def test_the_archive_command_copies_once_and_refuses_other_bytes(tmp_path: Path) -> None:
    spool = tmp_path / "spool dir"  # a space: the command quotes its paths
    spool.mkdir()
    segment = tmp_path / "pg_wal" / SEGMENT
    segment.parent.mkdir()
    segment.write_bytes(b"wal bytes")
    assert archive(spool, segment, SEGMENT) == 0
    assert (spool / SEGMENT).read_bytes() == b"wal bytes"
    assert not list(spool.glob("*.part"))
    assert archive(spool, segment, SEGMENT) == 0  # retried after a crash: same bytes, done
    segment.write_bytes(b"other bytes")
    assert archive(spool, segment, SEGMENT) != 0  # never overwrite an archived segment


def test_ship_uploads_finished_files_only_and_empties_the_spool(tmp_path: Path) -> None:
    store = ArtifactStore(url=(tmp_path / "store").as_uri(), cache_dir=tmp_path / "cache")
    spool = tmp_path / "spool"
    spool.mkdir()
    names = [SEGMENT, "00000002.history", "000000010000000000000002.00000028.backup"]
    for name in names:
        (spool / name).write_bytes(name.encode())
    (spool / f"{SEGMENT}.part").write_bytes(b"half")  # still being copied
    shipper = WalShipper(spool, store)
    shipper.start()
    shipper.stop()  # ships once more on the way out
    assert sorted(store.names(WAL)) == sorted(names)
    assert [p.name for p in spool.iterdir()] == [f"{SEGMENT}.part"]
    assert ship(spool, store) == []
    fetched = tmp_path / "fetched"
    assert fetch_all(store, fetched) == 3
    assert (fetched / SEGMENT).read_bytes() == SEGMENT.encode()
