"""The churn model registry (kiki.model_registry over `churn_models`).

No A/B candidate: churn scores feed campaigns and automation rules, which should all see one
model at a time.
"""

from __future__ import annotations

from kiki.model_registry import ModelRecord, ModelRegistry

__all__ = ["CHURN_MODELS", "NO_CHURN_MODEL", "ModelRecord"]

NO_CHURN_MODEL = (
    "no churn model is in production yet: train one with `kiki train churn --calibration-end "
    "DAY`, then `kiki engage promote VERSION`"
)
CHURN_MODELS = ModelRegistry(
    table="churn_models", noun="churn model", list_command="kiki engage models", candidates=False
)
register = CHURN_MODELS.register
list_models = CHURN_MODELS.list_models
production = CHURN_MODELS.production
promote = CHURN_MODELS.promote
rollback = CHURN_MODELS.rollback
