"""asyncpg connections with errors that say what is wrong and how to fix it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from kiki.errors import ConfigError, Unavailable

# A process's pool, opened on first use (a Serve replica's `runtime.pool`).
PoolSource = Callable[[], Awaitable[asyncpg.Pool]]


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def _explain(url: str, exc: BaseException) -> Exception:
    where = redact(url)
    if isinstance(
        exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
    ):
        return ConfigError(
            f"PostgreSQL at {where} refused the user or password: fix KIKI_DATABASE_URL"
        )
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return ConfigError(
            f"database in {where} does not exist: create it or fix KIKI_DATABASE_URL"
        )
    if isinstance(exc, socket.gaierror):
        return ConfigError(f"cannot resolve the host in {where}: fix KIKI_DATABASE_URL")
    if isinstance(exc, ValueError):
        return ConfigError(f"KIKI_DATABASE_URL {where} is malformed ({exc})")
    if isinstance(exc, OSError | TimeoutError):
        return Unavailable(
            f"cannot reach PostgreSQL at {where} ({exc.__class__.__name__}: {exc}); "
            "is the server running? Check KIKI_DATABASE_URL or unset it to use the embedded one"
        )
    return Unavailable(f"PostgreSQL at {where} failed: {exc}")


async def connect(url: str, timeout_s: float = 10.0) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(url, timeout=timeout_s)
    except Exception as exc:
        raise _explain(url, exc) from None


async def create_pool(
    url: str, *, min_size: int = 1, max_size: int = 10, timeout_s: float = 10.0
) -> asyncpg.Pool:
    try:
        return await asyncpg.create_pool(
            url, min_size=min_size, max_size=max_size, timeout=timeout_s, command_timeout=60
        )
    except Exception as exc:
        raise _explain(url, exc) from None


class LazyPool:
    """A small pool opened on first use, one for all callers (concurrent first calls wait for
    the same opening); a `PoolSource` when called."""

    def __init__(self, url: str, max_size: int = 4) -> None:
        self.url = url
        self.max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def __call__(self) -> asyncpg.Pool:
        async with self._lock:
            if self._pool is None:
                self._pool = await create_pool(self.url, min_size=1, max_size=self.max_size)
            return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
