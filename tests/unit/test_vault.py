"""Stored credentials at rest (kiki.vault): Fernet with KIKI_SECRET_KEY, or a key generated
once into $KIKI_HOME/secret.key (0600) and reused; plain values from before encryption are
told apart from tokens; a token under another key is a one-line error naming the source."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from kiki.config import Settings
from kiki.errors import ConfigError
from kiki.vault import Vault, is_token


def test_key_file_is_made_once_private_and_reused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    vault = Vault.from_settings(Settings(home=home))
    key_file = home / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert list(home.iterdir()) == [key_file]  # no draft left behind
    sealed = vault.seal("pat-na1-123")
    assert sealed != "pat-na1-123" and is_token(sealed)
    again = Vault.from_settings(Settings(home=home))  # a restart, another process
    assert again.open(sealed, "x") == "pat-na1-123"
    assert Fernet(key_file.read_bytes()).decrypt(sealed.encode()) == b"pat-na1-123"


def test_the_setting_wins_over_the_file(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    sealed = Vault.from_settings(Settings(home=tmp_path, secret_key=key)).seal("shpat_1")
    assert not (tmp_path / "secret.key").exists()
    assert Fernet(key).decrypt(sealed.encode()) == b"shpat_1"


def test_plain_values_pass_and_a_wrong_key_names_the_source(tmp_path: Path) -> None:
    ours = Vault(Fernet.generate_key(), "test")
    for plain in ("pat-na1-11111111-2222-3333-4444-555555555555", "shpat_0123456789abcdef",
                  "00D5g000004ABC!AQ0AQ.token", "postgresql://crm:pw@db:5432/crm", ""):  # fmt: skip
        assert not is_token(plain)
        assert ours.open(plain, "x") == plain  # stored before encryption
    theirs = Vault(Fernet.generate_key(), "test").seal("pat-1")
    with pytest.raises(ConfigError, match="the hubspot CRM source's access_token cannot be"):
        ours.open(theirs, "the hubspot CRM source's access_token")


def test_a_malformed_key_is_a_config_error_that_does_not_echo_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="KIKI_SECRET_KEY is not a Fernet key") as caught:
        Vault.from_settings(Settings(home=tmp_path, secret_key="hunter2"))
    assert "hunter2" not in caught.value.message
    assert "hunter2" not in repr(Settings(home=tmp_path, secret_key="hunter2"))


def test_derived_keys_are_stable_per_purpose_and_do_not_give_the_key_away() -> None:
    key = Fernet.generate_key()
    vault = Vault(key, "test")
    derived = vault.derive("kiki gdpr suppression v1")
    assert len(derived) == 32 and derived == Vault(key, "again").derive("kiki gdpr suppression v1")
    assert derived != vault.derive("another purpose")
    assert derived not in base64.urlsafe_b64decode(key)
    assert derived != Vault(Fernet.generate_key(), "other").derive("kiki gdpr suppression v1")
