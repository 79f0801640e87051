"""What a consent record must look like before it reaches the registry."""

from datetime import UTC, datetime
from uuid import UUID

import pytest
from pydantic import ValidationError

from kiki.gdpr import CUSTOMER_TABLES, CustomerTable, subject_hash
from kiki.shield.consent import ConsentRecord, Purpose

VALID = {"customer_id": "cust_1", "purpose": "email", "granted": True, "source": "web_form"}


def errors(**change: object) -> str:
    with pytest.raises(ValidationError) as info:
        ConsentRecord.model_validate({**VALID, **change})
    return str(info.value)


def test_a_valid_record_parses_with_defaults() -> None:
    record = ConsentRecord.model_validate(VALID)
    assert record.purpose is Purpose.EMAIL
    assert record.recorded_at is None and record.idempotency_key is None
    aware = ConsentRecord.model_validate({**VALID, "recorded_at": "2026-01-02T03:04:05+01:00"})
    assert aware.recorded_at == datetime(2026, 1, 2, 2, 4, 5, tzinfo=UTC)


def test_an_unknown_purpose_is_refused_and_the_valid_ones_are_named() -> None:
    message = errors(purpose="telepathy")
    assert "purpose" in message and "ads_personalization" in message and "push" in message


def test_a_time_without_a_utc_offset_is_refused() -> None:
    assert "timezone" in errors(recorded_at="2026-01-02T03:04:05")


@pytest.mark.parametrize("customer_id", ["", "x" * 129])
def test_customer_id_must_be_1_to_128_characters(customer_id: str) -> None:
    assert "customer_id" in errors(customer_id=customer_id)


def test_source_granted_and_unknown_fields_are_checked() -> None:
    assert "source" in errors(source="")
    assert "granted" in errors(granted="yes")  # a legal record takes a real boolean
    assert "consent" in errors(consent=True)  # a typo is an error, not silently dropped


def test_the_audit_subject_is_a_hash_bound_to_the_tenant() -> None:
    digest = subject_hash(UUID(int=1), "cust_1")
    assert len(digest) == 64 and "cust_1" not in digest
    assert digest != subject_hash(UUID(int=2), "cust_1")


def test_the_registry_lists_the_consent_events() -> None:
    assert CustomerTable("consent_events") in CUSTOMER_TABLES


@pytest.mark.parametrize("field", ["customer_id", "source", "idempotency_key"])
def test_text_postgresql_cannot_store_is_refused_naming_the_field(field: str) -> None:
    """The fuzz found NUL in a consent's source answered with a 500 from the query."""
    record = {"customer_id": "c1", "purpose": "email", "granted": True, "source": "web"}
    with pytest.raises(ValidationError, match=field):
        ConsentRecord.model_validate({**record, field: "a\x00b"})
