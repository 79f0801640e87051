"""Keys with scopes, expiry, rotation and last use (issue 19): in the database, over HTTP,
and through the `kiki keys` commands."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from kiki import auth
from kiki.auth import Scope
from kiki.db import migrate
from kiki.db.pool import connect
from kiki.errors import InvalidInput, NotFound, Unauthenticated
from launcher.cli import main
from tests.integration.conftest import RunningPlatform, new_key, run


def test_scopes_expiry_rotation_and_last_use_in_the_database(fresh_db: str) -> None:
    async def scenario() -> None:
        conn = await connect(fresh_db)
        try:
            await migrate.migrate(conn, migrate.discover())
            _, reader = await auth.create_api_key(conn, "acme", "dash", [Scope.READ])
            grant = await auth.authenticate(conn, reader)
            assert grant.scopes == (Scope.READ,) and grant.expires_at is None
            (info,) = await auth.list_api_keys(conn, "acme")
            assert info.last_used_at is not None and info.scopes == (Scope.READ,)

            # Rotation: same tenant, label and scopes; both keys work during the overlap.
            successor, old = await auth.rotate_api_key(conn, info.prefix, timedelta(hours=1))
            assert old.expires_at is not None
            assert (await auth.authenticate(conn, reader)).key_id == info.id
            new = await auth.authenticate(conn, successor)
            assert new.scopes == (Scope.READ,) and new.tenant == grant.tenant
            listed = {k.prefix: k for k in await auth.list_api_keys(conn, "acme")}
            assert listed[new.prefix].rotated_from == info.id
            assert listed[new.prefix].label == "dash"

            # No overlap: the old key stops at once, and says so.
            third, _ = await auth.rotate_api_key(conn, new.prefix, timedelta(0))
            with pytest.raises(Unauthenticated, match=f"{new.prefix} expired"):
                await auth.authenticate(conn, successor)
            assert (await auth.authenticate(conn, third)).scopes == (Scope.READ,)

            # A key with a lifetime passes it on to its successor.
            _, short = await auth.create_api_key(conn, "acme", "", expires_in=timedelta(days=7))
            short_grant = await auth.authenticate(conn, short)
            nxt, _ = await auth.rotate_api_key(conn, short_grant.prefix, timedelta(0))
            lifetime = (await auth.authenticate(conn, nxt)).expires_at - short_grant.expires_at
            assert timedelta(0) <= lifetime < timedelta(minutes=1)

            # Another tenant's key is not found, whichever way it is asked for.
            _, other = await auth.create_api_key(conn, "globex")
            other_prefix = auth.key_prefix(other)
            with pytest.raises(NotFound):
                await auth.revoke_api_key(conn, other_prefix, "acme")
            with pytest.raises(NotFound):
                await auth.rotate_api_key(conn, other_prefix, timedelta(0), "acme")
            with pytest.raises(InvalidInput, match="lifetime must be positive"):
                await auth.create_api_key(conn, "acme", expires_in=timedelta(0))
        finally:
            await conn.close()

    asyncio.run(scenario())


def _client(platform: RunningPlatform, key: str, app: str = "shield") -> httpx.Client:
    return httpx.Client(
        base_url=f"{platform.base_url}/{app}", headers={"X-API-Key": key}, timeout=30
    )


def test_each_route_needs_its_scope_and_says_which_is_missing(platform: RunningPlatform) -> None:
    url = platform.database_url
    reader = run(new_key(url, "scopes-acme", [Scope.READ]))
    writer = run(new_key(url, "scopes-acme", [Scope.WRITE]))
    admin = run(new_key(url, "scopes-acme"))
    budget = {"campaign_id": "camp_scoped", "budget": 100, "currency": "USD"}
    with (
        _client(platform, reader) as r,
        _client(platform, writer) as w,
        _client(platform, admin) as a,
    ):
        assert r.get("/api/v1/whoami").json()["scopes"] == ["read"]
        denied = r.post("/api/v1/allocate", json=budget)
        assert denied.status_code == 403, denied.text
        error = denied.json()["error"]
        assert error["code"] == "scope_missing" and "'admin'" in error["message"]
        assert w.post("/api/v1/allocate", json=budget).status_code == 403
        assert a.post("/api/v1/allocate", json=budget).status_code == 200
        assert r.get("/api/v1/budget/camp_scoped").status_code == 200
        reserve = {"campaign_id": "camp_scoped", "amount": 1, "platform": "meta"}
        assert r.post("/api/v1/reserve", json=reserve).status_code == 403
        assert w.post("/api/v1/reserve", json=reserve).json()["status"] == "granted"
        # GDPR erasure is an admin's.
        assert w.delete("/api/v1/gdpr/customers/cust_1").status_code == 403
        assert a.delete("/api/v1/gdpr/customers/cust_1").status_code == 200


def test_keys_over_http_admins_own_tenant_operators_every_tenant(
    platform: RunningPlatform,
) -> None:
    url = platform.database_url
    admin_a = run(new_key(url, "keys-a"))
    admin_b = run(new_key(url, "keys-b"))
    writer_a = run(new_key(url, "keys-a", [Scope.WRITE]))
    operator = run(new_key(url, "keys-ops", [Scope.OPERATOR]))
    with (
        _client(platform, admin_a) as a,
        _client(platform, admin_b) as b,
        _client(platform, operator) as op,
        _client(platform, writer_a) as w,
    ):
        made = a.post("/api/v1/keys", json={"label": "ci", "scopes": ["read"],
                                            "expires_in_s": 3600})  # fmt: skip
        assert made.status_code == 201, made.text
        new_key_a, info = made.json()["key"], made.json()["info"]
        assert info["tenant"] == "keys-a" and info["scopes"] == ["read"] and info["expires_at"]
        with _client(platform, new_key_a) as fresh:
            assert fresh.get("/api/v1/whoami").json()["tenant"] == "keys-a"

        listed = {k["prefix"] for k in a.get("/api/v1/keys").json()}
        assert info["prefix"] in listed
        assert info["prefix"] not in {k["prefix"] for k in b.get("/api/v1/keys").json()}
        # Another tenant's key: 404, never 403, whatever B tries.
        assert b.delete(f"/api/v1/keys/{info['prefix']}").status_code == 404
        assert b.post(f"/api/v1/keys/{info['prefix']}/rotate", json={}).status_code == 404
        # Another tenant's keys, operator keys, and keys from a writer: refused, scope named.
        assert b.get("/api/v1/keys", params={"tenant": "keys-a"}).status_code == 403
        assert a.post("/api/v1/keys", json={"scopes": ["operator"]}).status_code == 403
        assert w.get("/api/v1/keys").json()["error"]["code"] == "scope_missing"

        rotated = a.post(f"/api/v1/keys/{info['prefix']}/rotate", json={"overlap_s": 600})
        assert rotated.status_code == 200, rotated.text
        assert rotated.json()["info"]["rotated_from"] == info["id"]
        assert rotated.json()["previous"]["expires_at"] is not None
        with (
            _client(platform, new_key_a) as old,
            _client(platform, rotated.json()["key"]) as successor,
        ):
            assert old.get("/api/v1/whoami").status_code == 200  # the overlap
            assert successor.get("/api/v1/whoami").json()["scopes"] == ["read"]

        # The operator sees every tenant's keys and manages any of them.
        everyone = {k["tenant"] for k in op.get("/api/v1/keys").json()}
        assert {"keys-a", "keys-b"} <= everyone
        for_b = op.post("/api/v1/keys", json={"tenant": "keys-b", "scopes": ["write"]})
        assert for_b.status_code == 201 and for_b.json()["info"]["tenant"] == "keys-b"
        revoked = op.delete(f"/api/v1/keys/{for_b.json()['info']['prefix']}")
        assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
        # An operator key reads no tenant's data.
        assert op.get("/api/v1/budget/camp_scoped").status_code == 403


def test_kiki_keys_commands(fresh_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIKI_DATABASE_URL", fresh_db)
    monkeypatch.setenv("KIKI_HOME", str(tmp_path / "home"))
    runner = CliRunner()

    def kiki(*args: str, code: int = 0) -> str:
        done = runner.invoke(main, ["keys", *args])
        assert done.exit_code == code, done.output
        return done.output

    key = kiki("create", "--tenant", "acme", "--scope", "read,write", "--expires-in", "90d")
    prefix = auth.key_prefix(key.strip())
    (listed,) = json.loads(kiki("list", "--json"))
    assert listed["scopes"] == ["read", "write"] and listed["expires_at"]
    assert f"{prefix}  " in kiki("list") and "read,write" in kiki("list")
    rotated = kiki("rotate", prefix, "--overlap", "1h")
    assert rotated.splitlines()[0].startswith("kiki_") and f"{prefix} keeps working" in rotated
    assert "is not a duration" in kiki("rotate", prefix, "--overlap", "soon", code=2)
    assert "unknown scope 'root'" in kiki("create", "--tenant", "acme", "--scope", "root", code=2)
    assert f"revoked {prefix}" in kiki("revoke", prefix)


def test_console_sessions_end_with_sign_out_expiry_or_the_keys_revocation(fresh_db: str) -> None:
    """A session stands for its key (same tenant and scopes) and stores only a hash of its
    token; it ends when closed, when it expires, and when its key is revoked."""

    async def scenario() -> None:
        conn = await connect(fresh_db)
        try:
            await migrate.migrate(conn, migrate.discover())
            _, key = await auth.create_api_key(conn, "acme", "dash", [Scope.READ])
            token, grant = await auth.open_session(conn, key, timedelta(hours=1))
            assert token != key and len(token) >= 40
            stored = await conn.fetchval("SELECT token_hash FROM console_sessions")
            assert stored == auth.hash_api_key(token) and token not in stored
            again = await auth.session_grant(conn, token)
            assert (again.tenant, again.scopes) == (grant.tenant, (Scope.READ,))

            await auth.close_session(conn, token)
            with pytest.raises(Unauthenticated, match="sign in again"):
                await auth.session_grant(conn, token)

            short, _ = await auth.open_session(conn, key, timedelta(microseconds=1))
            await asyncio.sleep(0.01)
            with pytest.raises(Unauthenticated):
                await auth.session_grant(conn, short)

            live, _ = await auth.open_session(conn, key, timedelta(hours=1))
            await auth.revoke_api_key(conn, key.split("_")[1], "acme")
            with pytest.raises(Unauthenticated):
                await auth.session_grant(conn, live)
            with pytest.raises(Unauthenticated):
                await auth.open_session(conn, key, timedelta(hours=1))
        finally:
            await conn.close()

    asyncio.run(scenario())
