import pytest

from kiki.config import load_settings
from kiki.errors import ConfigError


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("KIKI_DATABASE_URL", "RAY_ADDRESS", "KIKI_HTTP_PORT", "KIKI_HOME"):
        monkeypatch.delenv(var, raising=False)
    settings = load_settings()
    assert settings.database_url is None
    assert (settings.http_port, settings.grpc_port) == (8000, 50051)
    assert settings.pgdata.name == "pgdata"


def test_ray_address_comes_from_the_standard_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    assert load_settings().ray_address == "ray://head:10001"


@pytest.mark.parametrize(
    ("var", "value", "mentions"),
    [
        ("KIKI_HTTP_PORT", "eighty", "KIKI_HTTP_PORT"),
        ("KIKI_PG_PORT", "70000", "KIKI_PG_PORT"),
        ("KIKI_DATABASE_URL", "mysql://x@y/z", "postgresql://"),
        ("KIKI_REPLICA_CPUS", "-1", "KIKI_REPLICA_CPUS"),
    ],
)
def test_bad_values_give_one_line_that_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, mentions: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert mentions in info.value.message
    assert "\n" not in info.value.message
