import time
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from kiki.auth import (
    TENANT_ADMIN,
    ApiKeyCache,
    Grant,
    Scope,
    Tenant,
    check_tenant_name,
    generate_api_key,
    hash_api_key,
    key_prefix,
    parse_scopes,
)
from kiki.errors import Forbidden, InvalidInput, Unauthenticated


def test_keys_are_random_well_formed_and_hashed_one_way() -> None:
    key, prefix = generate_api_key()
    other, _ = generate_api_key()
    assert key != other
    assert key.startswith(f"kiki_{prefix}_") and len(key) == 5 + 8 + 1 + 43
    assert hash_api_key(key) != hash_api_key(other)
    assert key not in hash_api_key(key)


@pytest.mark.parametrize("name", ["", "Acme", "a b", "-x", "x" * 65])
def test_tenant_names_are_checked(name: str) -> None:
    with pytest.raises(InvalidInput):
        check_tenant_name(name)


def grant(*scopes: Scope, expires_at: datetime | None = None) -> Grant:
    return Grant(
        tenant=Tenant(id=uuid4(), name="acme"),
        key_id=uuid4(),
        prefix="AbCd1234",
        scopes=scopes,
        expires_at=expires_at,
    )


def test_key_cache_expires() -> None:
    cache = ApiKeyCache(ttl_s=0.05)
    held = grant(*TENANT_ADMIN)
    cache.put("k", held)
    assert cache.get("k") == held
    assert cache.get("other") is None
    time.sleep(0.06)
    assert cache.get("k") is None


def test_the_prefix_is_read_back_from_a_key() -> None:
    key, prefix = generate_api_key()
    assert key_prefix(key) == prefix


@pytest.mark.parametrize(
    ("held", "allowed"),
    [
        ((Scope.READ,), {Scope.READ}),
        ((Scope.WRITE,), {Scope.READ, Scope.WRITE}),
        ((Scope.ADMIN,), {Scope.READ, Scope.WRITE, Scope.ADMIN}),
        # Operator acts on platform-wide state only: it reads no tenant's data by accident.
        ((Scope.OPERATOR,), {Scope.OPERATOR}),
        ((Scope.READ, Scope.OPERATOR), {Scope.READ, Scope.OPERATOR}),
    ],
)
def test_a_tenant_scope_includes_the_weaker_ones_and_operator_stands_alone(
    held: tuple[Scope, ...], allowed: set[Scope]
) -> None:
    g = grant(*held)
    for scope in Scope:
        assert g.allows(scope) is (scope in allowed)
        if scope in allowed:
            assert g.require(scope) == g.tenant
        else:
            with pytest.raises(Forbidden, match=f"lacks the '{scope.value}' scope") as err:
                g.require(scope)
            assert err.value.code == "scope_missing"
            assert f"--scope {scope.value}" in err.value.message  # how to get one


def test_scopes_are_parsed_strictly() -> None:
    assert parse_scopes(["Admin", " read", "read"]) == (Scope.READ, Scope.ADMIN)
    with pytest.raises(InvalidInput, match="unknown scope 'root'"):
        parse_scopes(["read", "root"])
    with pytest.raises(InvalidInput, match="at least one scope"):
        parse_scopes([])


def test_an_expired_grant_is_refused_naming_the_key() -> None:
    now = datetime.now(UTC)
    grant(Scope.READ, expires_at=now + timedelta(seconds=5)).check_live(now)
    grant(Scope.READ).check_live(now)  # no expiry
    with pytest.raises(Unauthenticated, match="AbCd1234 expired"):
        grant(Scope.READ, expires_at=now).check_live(now)
