"""The LTV model registry (kiki.model_registry over `ltv_models`), with A/B candidates.

A candidate serves a fixed share of customers, chosen by a stable hash of customer_id so a
customer always sees the same model.
"""

from __future__ import annotations

import hashlib

from kiki.model_registry import ModelRecord, ModelRegistry

__all__ = ["LTV_MODELS", "ModelRecord", "ab_bucket"]

LTV_MODELS = ModelRegistry(
    table="ltv_models", noun="LTV model", list_command="kiki models list", candidates=True
)
register = LTV_MODELS.register
list_models = LTV_MODELS.list_models
get = LTV_MODELS.get
serving = LTV_MODELS.serving
promote = LTV_MODELS.promote
rollback = LTV_MODELS.rollback


def ab_bucket(customer_id: str) -> int:
    """0..99, stable across processes and restarts."""
    digest = hashlib.blake2b(customer_id.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") % 100
