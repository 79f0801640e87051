import time
from uuid import uuid4

import pytest

from kiki.auth import ApiKeyCache, Tenant, check_tenant_name, generate_api_key, hash_api_key
from kiki.errors import InvalidInput


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


def test_key_cache_expires() -> None:
    cache = ApiKeyCache(ttl_s=0.05)
    tenant = Tenant(id=uuid4(), name="acme")
    cache.put("k", tenant)
    assert cache.get("k") == tenant
    assert cache.get("other") is None
    time.sleep(0.06)
    assert cache.get("k") is None
